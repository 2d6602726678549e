// Constants and small codecs shared by the simulator's source files.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace shoal::sim {

inline constexpr uint64_t kUnitsPerTick = 10;   // time units per Raft tick
inline constexpr int kElectionTicks = 6;
// Clock drift stays below the lease margin: at most one missed tick per election timeout.
static_assert(kElectionTicks <= 8, "skip periods assume at most one skip per election timeout");
inline constexpr size_t kSpareNodes = 2;        // ids that can join later
inline constexpr size_t kClients = 3;
inline constexpr uint64_t kMaxDelayUnits = 12;  // normal one-way delay
inline constexpr uint64_t kSlowDelayUnits = 80; // extra delay of a "slow" message
inline constexpr uint64_t kMaxDiskUnits = 8;    // time to make a Ready durable
inline constexpr uint64_t kCompactEvery = 25;   // applied entries between snapshots
inline constexpr uint64_t kCompactKeep = 5;     // entries kept behind a snapshot
inline constexpr uint64_t kSettleTicks = 150;   // bound on ticks for every voter to catch up
inline constexpr uint64_t kOpTimeoutTicks = 60; // a client gives up after this
inline constexpr uint64_t kReadRetryTicks = 15; // a read is re-sent after this
inline constexpr size_t kMaxOps = 150;          // client operations per run
inline constexpr uint64_t kIsolateMaxTicks = 20;  // a cut-off node returns within this
// Fault kinds of inject_fault(), as bits of Swarm::fault_mask.
enum FaultKind : uint32_t {
  kFaultCrash = 1U << 0,
  kFaultRestart = 1U << 1,
  kFaultPartition = 1U << 2,
  kFaultBlockLink = 1U << 3,
  kFaultHealLinks = 1U << 4,
  kFaultNetwork = 1U << 5,
  kFaultMembership = 1U << 6,
  kFaultTransfer = 1U << 7,
  kFaultCrashLeader = 1U << 8,
  kFaultIsolateLeader = 1U << 9,
};
inline constexpr uint32_t kAlwaysOnFaults = kFaultRestart | kFaultHealLinks;
inline constexpr uint64_t kFnvPrime = 0x100000001b3ULL;
inline constexpr const char* kKeys[] = {"a", "b", "c"};

// A client write as stored in an entry: "w|<op>|<key>|<value>".
struct Write {
  uint64_t op = 0;
  std::string key;
  std::string value;
};

inline std::string encode_write(const Write& w) {
  return "w|" + std::to_string(w.op) + "|" + w.key + "|" + w.value;
}

inline std::optional<Write> decode_write(std::string_view data) {
  if (data.size() < 2 || data.substr(0, 2) != "w|") return std::nullopt;
  data.remove_prefix(2);
  const size_t a = data.find('|');
  const size_t b = data.find('|', a + 1);
  if (a == std::string_view::npos || b == std::string_view::npos) return std::nullopt;
  Write w;
  w.op = std::stoull(std::string(data.substr(0, a)));
  w.key = std::string(data.substr(a + 1, b - a - 1));
  w.value = std::string(data.substr(b + 1));
  return w;
}

// State machine image in a snapshot: "<hash>\n" then "key\tvalue\n" lines.
inline std::string encode_state(const std::map<std::string, std::string>& kv, uint64_t hash) {
  std::string out = std::to_string(hash) + "\n";
  for (const auto& [k, v] : kv) out += k + "\t" + v + "\n";
  return out;
}

inline void decode_state(std::string_view data, std::map<std::string, std::string>* kv, uint64_t* hash) {
  size_t nl = data.find('\n');
  *hash = std::stoull(std::string(data.substr(0, nl)));
  data.remove_prefix(nl + 1);
  while (!data.empty()) {
    nl = data.find('\n');
    std::string_view line = data.substr(0, nl);
    const size_t tab = line.find('\t');
    (*kv)[std::string(line.substr(0, tab))] = std::string(line.substr(tab + 1));
    data.remove_prefix(nl + 1);
  }
}

}  // namespace shoal::sim
