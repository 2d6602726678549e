// RocksDB checksums every WAL record with its CRC-32C, and Debian's build of
// it (portable, for any x86-64) computes that from tables: about 3 % of a
// worker's time at SET -P 16. The link (src/storage/CMakeLists.txt: ld's
// --wrap, and -u so that this file is always linked) sends RocksDB's calls
// here instead, to the same checksum with the CPU's instruction; what
// RocksDB writes and reads back is unchanged. Checked against RocksDB's own
// in engine_test.cc.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/crc32c.h"

extern "C" uint32_t __real__ZN7rocksdb6crc32c6ExtendEjPKcm(uint32_t crc, const char* data, size_t n);

extern "C" uint32_t __wrap__ZN7rocksdb6crc32c6ExtendEjPKcm(uint32_t crc, const char* data, size_t n) {
#if defined(__x86_64__)
  return shoal::Crc32c(std::string_view(data, n), crc);
#else
  // Elsewhere ours has no instruction to use, and RocksDB may have one.
  return __real__ZN7rocksdb6crc32c6ExtendEjPKcm(crc, data, n);
#endif
}
