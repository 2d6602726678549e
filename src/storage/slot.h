// Redis Cluster key slots: CRC16/XMODEM of the key (or of its {hash tag}),
// modulo 16384, exactly as Redis Cluster computes them.
#pragma once

#include <cstdint>
#include <string_view>

namespace shoal::storage {

inline constexpr uint16_t kSlotCount = 16384;

// CRC16/XMODEM (poly 0x1021, init 0): the checksum Redis Cluster uses.
uint16_t Crc16(std::string_view data);

// The slot of a key: if the key holds a non-empty "{...}" tag, only the tag
// (between the first '{' and the first '}' after it) is hashed.
uint16_t KeySlot(std::string_view key);

}  // namespace shoal::storage
