// HyperLogLog: PFADD PFCOUNT PFMERGE, in Redis's own representation, so a
// value moves both ways (GET here, SET there, and back). The format:
//
//   "HYLL" | encoding (0 dense, 1 sparse) | 3 unused | 8-byte cached count
//   (little endian; its top bit set: not valid) | registers
//
// 16384 six-bit registers. Dense: packed least significant bit first (12288
// bytes). Sparse: runs, "00llllll" (1-64 zero registers), "01llllll
// llllllll" (1-16384 zero registers), "1vvvvvll" (1-4 registers of value
// 1-32). An element's register is the low 14 bits of MurmurHash64A(seed
// 0xadc83b19); its value one more than the trailing zero bits of the other
// 50. A sparse value is updated in place the way Redis does it (split the
// run that holds the register, then merge equal neighbours within a few
// runs), so the bytes match Redis's for the same adds; it turns dense when
// a value passes 32 or it would pass 3000 bytes (hll-sparse-max-bytes).
// The count is Ertl's estimator ("New cardinality estimation algorithms for
// HyperLogLog sketches", 2017), as Redis computes it.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/strings.h"
#include "kv/command_util.h"
#include "kv/commands.h"
#include "kv/string_commands.h"

namespace shoal::kv {
namespace {

constexpr int kRegisters = 16384;  // 2^14
constexpr int kIndexBits = 14;
constexpr int kRestBits = 64 - kIndexBits;  // 50
constexpr size_t kHeader = 16;
constexpr size_t kDenseBytes = kHeader + (kRegisters * 6 + 7) / 8;
constexpr uint8_t kDense = 0, kSparse = 1;
constexpr int kSparseValueMax = 32, kSparseValRunMax = 4, kSparseZeroRunMax = 64;
constexpr size_t kSparseBytesMax = 3000;

constexpr std::string_view kErrNotHll = "WRONGTYPE Key is not a valid HyperLogLog string value.";
constexpr std::string_view kErrCorrupt = "INVALIDOBJ Corrupted HLL object detected";

uint64_t Murmur64A(std::string_view s, uint64_t seed) {
  constexpr uint64_t m = 0xc6a4a7935bd1e995ULL;
  constexpr int r = 47;
  uint64_t h = seed ^ (static_cast<uint64_t>(s.size()) * m);
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t blocks = s.size() / 8;
  for (size_t i = 0; i < blocks; ++i) {
    uint64_t k = 0;
    for (int b = 7; b >= 0; --b) k = (k << 8) | p[i * 8 + static_cast<size_t>(b)];  // little endian
    k *= m;
    k ^= k >> r;
    k *= m;
    h ^= k;
    h *= m;
  }
  const uint8_t* tail = p + blocks * 8;
  const size_t rest = s.size() & 7;
  if (rest > 0) {
    for (size_t b = rest; b-- > 0;) h ^= static_cast<uint64_t>(tail[b]) << (8 * b);
    h *= m;
  }
  h ^= h >> r;
  h *= m;
  h ^= h >> r;
  return h;
}

// An element's register and value.
std::pair<int, uint8_t> RegisterOf(std::string_view element) {
  uint64_t h = Murmur64A(element, 0xadc83b19ULL);
  const int index = static_cast<int>(h & (kRegisters - 1));
  h >>= kIndexBits;
  h |= uint64_t{1} << kRestBits;  // at most 51
  return {index, static_cast<uint8_t>(std::countr_zero(h) + 1)};
}

// ---- sparse opcodes
bool IsZero(uint8_t b) { return (b & 0xc0) == 0x00; }
bool IsXzero(uint8_t b) { return (b & 0xc0) == 0x40; }
int ZeroLen(uint8_t b) { return (b & 0x3f) + 1; }
int XzeroLen(uint8_t b0, uint8_t b1) { return (((b0 & 0x3f) << 8) | b1) + 1; }
int ValValue(uint8_t b) { return ((b >> 2) & 0x1f) + 1; }
int ValLen(uint8_t b) { return (b & 0x3) + 1; }
uint8_t Val(int value, int len) { return static_cast<uint8_t>(0x80 | ((value - 1) << 2) | (len - 1)); }
// A run of `len` zero registers: one byte up to 64, else two.
void AppendZeros(std::string* out, int len) {
  if (len > kSparseZeroRunMax) {
    out->push_back(static_cast<char>(0x40 | ((len - 1) >> 8)));
    out->push_back(static_cast<char>((len - 1) & 0xff));
  } else {
    out->push_back(static_cast<char>(len - 1));
  }
}

std::string NewHll() {
  std::string h("HYLL", 4);
  h.push_back(static_cast<char>(kSparse));
  h.append(11, '\0');  // unused, and a valid cached count of 0
  AppendZeros(&h, kRegisters);
  return h;
}

void InvalidateCache(std::string& h) { h[15] = static_cast<char>(static_cast<uint8_t>(h[15]) | 0x80); }

// Whether a string is an HLL Redis would accept (the dense one complete).
bool IsHll(std::string_view s) {
  if (s.size() < kHeader || s.substr(0, 4) != "HYLL") return false;
  const auto enc = static_cast<uint8_t>(s[4]);
  if (enc > kSparse) return false;
  return enc != kDense || s.size() == kDenseBytes;
}

int DenseGet(std::string_view regs, int i) {
  const size_t bit = static_cast<size_t>(i) * 6;
  const size_t byte = bit / 8, shift = bit % 8;
  const unsigned lo = static_cast<uint8_t>(regs[byte]);
  const unsigned hi = byte + 1 < regs.size() ? static_cast<uint8_t>(regs[byte + 1]) : 0u;
  return static_cast<int>(((lo >> shift) | (hi << (8 - shift))) & 63);
}

void DenseSet(std::string& h, int i, int value) {
  const size_t bit = static_cast<size_t>(i) * 6;
  const size_t byte = kHeader + bit / 8, shift = bit % 8;
  uint16_t both = static_cast<uint8_t>(h[byte]);
  if (byte + 1 < h.size()) both |= static_cast<uint16_t>(static_cast<uint8_t>(h[byte + 1]) << 8);
  both = static_cast<uint16_t>((both & ~(63u << shift)) | (static_cast<unsigned>(value) << shift));
  h[byte] = static_cast<char>(both & 0xff);
  if (byte + 1 < h.size()) h[byte + 1] = static_cast<char>(both >> 8);
}

// The registers of an HLL (false: a sparse one that does not cover them all
// exactly: corrupt).
bool Registers(std::string_view h, std::vector<uint8_t>* out) {
  out->assign(kRegisters, 0);
  if (static_cast<uint8_t>(h[4]) == kDense) {
    for (int i = 0; i < kRegisters; ++i) (*out)[static_cast<size_t>(i)] = static_cast<uint8_t>(DenseGet(h.substr(kHeader), i));
    return true;
  }
  int i = 0;
  for (size_t p = kHeader; p < h.size();) {
    const auto b = static_cast<uint8_t>(h[p]);
    if (IsZero(b)) {
      i += ZeroLen(b);
      p += 1;
    } else if (IsXzero(b)) {
      if (p + 1 >= h.size()) return false;
      i += XzeroLen(b, static_cast<uint8_t>(h[p + 1]));
      p += 2;
    } else {
      const int len = ValLen(b);
      if (i + len > kRegisters) return false;
      for (int k = 0; k < len; ++k) (*out)[static_cast<size_t>(i++)] = static_cast<uint8_t>(ValValue(b));
      p += 1;
    }
    if (i > kRegisters) return false;
  }
  return i == kRegisters;
}

// Rewrites a sparse HLL as dense (the header, cached count included, stays).
bool ToDense(std::string& h) {
  if (static_cast<uint8_t>(h[4]) == kDense) return true;
  std::vector<uint8_t> regs;
  if (!Registers(h, &regs)) return false;
  std::string d = h.substr(0, kHeader);
  d[4] = static_cast<char>(kDense);
  d.resize(kDenseBytes, '\0');
  for (int i = 0; i < kRegisters; ++i) {
    if (regs[static_cast<size_t>(i)] != 0) DenseSet(d, i, regs[static_cast<size_t>(i)]);
  }
  h = std::move(d);
  return true;
}

// Raises register i to `value` if it is lower: 1 if it changed, 0 if not,
// -1 if the HLL is corrupt. A sparse HLL is changed in place as Redis does.
int SetRegister(std::string& h, int i, int value) {
  if (static_cast<uint8_t>(h[4]) == kDense) {
    if (DenseGet(std::string_view(h).substr(kHeader), i) >= value) return 0;
    DenseSet(h, i, value);
    return 1;
  }
  auto promote = [&] {
    if (!ToDense(h)) return -1;
    DenseSet(h, i, value);
    return 1;
  };
  if (value > kSparseValueMax) return promote();
  // Find the run that holds register i, and the one before it.
  size_t p = kHeader, prev = std::string::npos;
  int first = 0, span = 0;
  while (p < h.size()) {
    const auto b = static_cast<uint8_t>(h[p]);
    size_t oplen = 1;
    if (IsZero(b)) {
      span = ZeroLen(b);
    } else if (IsXzero(b)) {
      if (p + 1 >= h.size()) return -1;
      span = XzeroLen(b, static_cast<uint8_t>(h[p + 1]));
      oplen = 2;
    } else {
      span = ValLen(b);
    }
    if (i <= first + span - 1) break;
    prev = p;
    p += oplen;
    first += span;
  }
  if (span == 0 || p >= h.size()) return -1;
  const auto b = static_cast<uint8_t>(h[p]);
  const bool is_xzero = IsXzero(b), is_zero = IsZero(b), is_val = !is_zero && !is_xzero;
  bool replaced = false;
  if (is_val) {
    if (ValValue(b) >= value) return 0;
    if (span == 1) {
      h[p] = static_cast<char>(Val(value, 1));
      replaced = true;
    }
  } else if (is_zero && span == 1) {
    h[p] = static_cast<char>(Val(value, 1));
    replaced = true;
  }
  if (!replaced) {
    // Split the run: what is left of i, i itself, what is right of it.
    const int last = first + span - 1;
    std::string seq;
    if (is_val) {
      if (i != first) seq.push_back(static_cast<char>(Val(ValValue(b), i - first)));
      seq.push_back(static_cast<char>(Val(value, 1)));
      if (i != last) seq.push_back(static_cast<char>(Val(ValValue(b), last - i)));
    } else {
      if (i != first) AppendZeros(&seq, i - first);
      seq.push_back(static_cast<char>(Val(value, 1)));
      if (i != last) AppendZeros(&seq, last - i);
    }
    const size_t oldlen = is_xzero ? 2 : 1;
    if (seq.size() > oldlen && h.size() + (seq.size() - oldlen) > kSparseBytesMax) return promote();
    h.replace(p, oldlen, seq);
  }
  // Merge equal neighbouring value runs, over at most five runs from the
  // one before the change.
  size_t q = prev == std::string::npos ? kHeader : prev;
  for (int scan = 5; q < h.size() && scan-- > 0;) {
    const auto c = static_cast<uint8_t>(h[q]);
    if (IsXzero(c)) {
      q += 2;
      continue;
    }
    if (IsZero(c)) {
      q += 1;
      continue;
    }
    if (q + 1 < h.size()) {
      const auto d = static_cast<uint8_t>(h[q + 1]);
      if ((d & 0x80) && ValValue(c) == ValValue(d) && ValLen(c) + ValLen(d) <= kSparseValRunMax) {
        h[q + 1] = static_cast<char>(Val(ValValue(c), ValLen(c) + ValLen(d)));
        h.erase(q, 1);
        continue;  // the merged run may merge with the next one too
      }
    }
    q += 1;
  }
  return 1;
}

double Sigma(double x) {
  if (x == 1.0) return INFINITY;
  double y = 1.0, z = x, before = 0;
  do {
    x *= x;
    before = z;
    z += x * y;
    y += y;
  } while (before != z);
  return z;
}

double Tau(double x) {
  if (x == 0.0 || x == 1.0) return 0.0;
  double y = 1.0, z = 1 - x, before = 0;
  do {
    x = std::sqrt(x);
    before = z;
    y *= 0.5;
    z -= (1 - x) * (1 - x) * y;
  } while (before != z);
  return z / 3;
}

uint64_t Estimate(const std::vector<uint8_t>& regs) {
  int histo[64] = {0};
  for (uint8_t r : regs) ++histo[r];
  const double m = kRegisters;
  double z = m * Tau((m - histo[kRestBits + 1]) / m);
  for (int j = kRestBits; j >= 1; --j) {
    z += histo[j];
    z *= 0.5;
  }
  z += m * Sigma(histo[0] / m);
  // A count beyond int64 (only crafted registers give one, z = 0) answers
  // what redis-server on x86-64 answers, the same on every machine.
  const double e = 0.721347520444481703680 * m * m / z;
  if (!std::isfinite(e) || e >= 9.2e18) return uint64_t{1} << 63;
  return static_cast<uint64_t>(std::llround(e));
}

// PFCOUNT key [key ...]. One key: its cached count when valid, or the
// estimate, which is then cached in the value (as Redis does, so GET shows
// the same bytes; that makes it a write here, through the log). Several
// keys: the estimate of their union, nothing written.
Status PfcountApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  std::vector<uint8_t> merged(kRegisters, 0), regs;
  Status st;
  for (const std::string& key : e.args) {
    auto s = GetStringForWrite(txn, e.db, key, reply, &st);
    if (!s) return st;
    if (!s->found) continue;
    std::string& h = s->payload;
    if (!IsHll(h)) {
      reply->Error(kErrNotHll);
      return Status::Ok();
    }
    if (e.args.size() == 1 && !(static_cast<uint8_t>(h[15]) & 0x80)) {
      uint64_t cached = 0;
      for (int b = 7; b >= 0; --b) cached = (cached << 8) | static_cast<uint8_t>(h[8 + static_cast<size_t>(b)]);
      reply->Integer(static_cast<int64_t>(cached));
      return Status::Ok();
    }
    if (!Registers(h, &regs)) {
      reply->Error(kErrCorrupt);
      return Status::Ok();
    }
    if (e.args.size() == 1) {
      const uint64_t count = Estimate(regs);
      for (int b = 0; b < 8; ++b) h[8 + static_cast<size_t>(b)] = static_cast<char>((count >> (8 * b)) & 0xff);
      st = PutString(txn, e.db, key, h, s->expire_at_ms);
      if (st.ok()) reply->Integer(static_cast<int64_t>(count));
      return st;
    }
    for (int i = 0; i < kRegisters; ++i) merged[static_cast<size_t>(i)] = std::max(merged[static_cast<size_t>(i)], regs[static_cast<size_t>(i)]);
  }
  reply->Integer(static_cast<int64_t>(Estimate(merged)));
  return Status::Ok();
}

// The HLL at key for a write (a new one if missing): false if answered or
// storage failed (*status).
bool HllForWrite(ApplyTxn& txn, uint16_t db, const std::string& key, StringAt* at, bool* created, resp::Writer* reply,
                 Status* status) {
  auto s = GetStringForWrite(txn, db, key, reply, status);
  if (!s) return false;
  *created = !s->found;
  if (s->found && !IsHll(s->payload)) return reply->Error(kErrNotHll), false;
  if (!s->found) s->payload = NewHll();
  *at = std::move(*s);
  return true;
}

// PFADD key [element ...]: 1 if a register changed (or the key is new).
Status PfaddApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  StringAt at;
  bool created = false;
  Status st;
  if (!HllForWrite(txn, e.db, e.args[0], &at, &created, reply, &st)) return st;
  bool updated = created;
  for (size_t k = 1; k < e.args.size(); ++k) {
    auto [index, value] = RegisterOf(e.args[k]);
    const int r = SetRegister(at.payload, index, value);
    if (r < 0) {
      reply->Error(kErrCorrupt);
      return Status::Ok();
    }
    updated = updated || r == 1;
  }
  if (!updated) {
    reply->Integer(0);
    return Status::Ok();
  }
  InvalidateCache(at.payload);
  st = PutString(txn, e.db, e.args[0], at.payload, at.expire_at_ms);
  if (st.ok()) reply->Integer(1);
  return st;
}

// PFMERGE destkey [sourcekey ...]: destkey (counted among the sources) gets
// the largest of every register.
Status PfmergeApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  std::vector<uint8_t> merged(kRegisters, 0), regs;
  bool dense = false;
  Status st;
  for (const std::string& key : e.args) {
    auto s = GetStringForWrite(txn, e.db, key, reply, &st);
    if (!s) return st;
    if (!s->found) continue;
    if (!IsHll(s->payload)) {
      reply->Error(kErrNotHll);
      return Status::Ok();
    }
    dense = dense || static_cast<uint8_t>(s->payload[4]) == kDense;
    if (!Registers(s->payload, &regs)) {
      reply->Error(kErrCorrupt);
      return Status::Ok();
    }
    for (int i = 0; i < kRegisters; ++i) merged[static_cast<size_t>(i)] = std::max(merged[static_cast<size_t>(i)], regs[static_cast<size_t>(i)]);
  }
  StringAt at;
  bool created = false;
  if (!HllForWrite(txn, e.db, e.args[0], &at, &created, reply, &st)) return st;
  if (dense && !ToDense(at.payload)) {
    reply->Error(kErrCorrupt);
    return Status::Ok();
  }
  for (int i = 0; i < kRegisters; ++i) {
    if (merged[static_cast<size_t>(i)] != 0 && SetRegister(at.payload, i, merged[static_cast<size_t>(i)]) < 0) {
      reply->Error(kErrCorrupt);
      return Status::Ok();
    }
  }
  InvalidateCache(at.payload);
  st = PutString(txn, e.db, e.args[0], at.payload, at.expire_at_ms);
  if (st.ok()) reply->Simple("OK");
  return st;
}

}  // namespace

void AppendHllCommands(std::vector<CommandSpec>* out) {
  // name, arity, flags, first, last, step, group, op, read, prepare, apply
  out->insert(out->end(), {
      // Flagged readonly as in Redis, though it may write the cached count.
      {"pfcount", -2, kCmdReadonly, 1, -1, 1, "hyperloglog", 107, nullptr, nullptr, PfcountApply},
      {"pfadd", -2, kCmdWrite | kCmdDenyOom | kCmdFast, 1, 1, 1, "hyperloglog", 105, nullptr, nullptr, PfaddApply},
      {"pfmerge", -2, kCmdWrite | kCmdDenyOom, 1, -1, 1, "hyperloglog", 106, nullptr, nullptr, PfmergeApply},
  });
}

}  // namespace shoal::kv
