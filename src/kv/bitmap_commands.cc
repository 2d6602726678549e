// Bitmaps: SETBIT GETBIT BITCOUNT BITPOS BITOP BITFIELD BITFIELD_RO. A
// bitmap is a string (GET returns its bytes); bit 0 is the most significant
// bit of the first byte, as in Redis. A write rewrites the string whole, as
// every string write does.
#include <bit>
#include <cstdint>
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "common/strings.h"
#include "kv/command_util.h"
#include "kv/commands.h"
#include "kv/string_commands.h"

namespace shoal::kv {
namespace {

constexpr std::string_view kErrBitOffset = "ERR bit offset is not an integer or out of range";
constexpr std::string_view kErrBitValue = "ERR bit is not an integer or out of range";
constexpr std::string_view kErrBitfieldType =
    "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";

// A bit offset (SETBIT, GETBIT, BITFIELD): not negative and inside the
// longest string (proto-max-bulk-len); with `bits` > 0, "#n" means n * bits.
std::optional<int64_t> ParseBitOffset(std::string_view s, int64_t max_bulk_len, int bits = 0) {
  const bool hash = bits > 0 && !s.empty() && s[0] == '#';
  auto v = ParseInt64(hash ? s.substr(1) : s);
  if (!v) return std::nullopt;
  int64_t off = *v;
  if (hash && __builtin_mul_overflow(off, bits, &off)) return std::nullopt;
  if (off < 0 || (off >> 3) >= max_bulk_len) return std::nullopt;
  return off;
}

int GetBit(std::string_view s, uint64_t bit) {
  const uint64_t byte = bit >> 3;
  if (byte >= s.size()) return 0;
  return (static_cast<uint8_t>(s[byte]) >> (7 - (bit & 7))) & 1;
}

void PutBit(std::string& s, uint64_t bit, int on) {
  const auto mask = static_cast<uint8_t>(1u << (7 - (bit & 7)));
  auto& b = reinterpret_cast<uint8_t&>(s[bit >> 3]);
  b = on ? (b | mask) : (b & ~mask);
}

// The string at key for a read: false if answered (WRONGTYPE, storage);
// *found false for a missing key.
bool ReadBits(ReadContext& ctx, std::string_view key, std::string* raw, Value* v, bool* found, resp::Writer* reply) {
  if (!ReadLive(ctx, key, raw, v, found, reply)) return false;
  if (*found && v->type != ValueType::kString) return reply->Error(kErrWrongType), false;
  return true;
}

// A range of bits [first, last] of a string `len` bytes long, from the
// start/end arguments of BITCOUNT and BITPOS (bytes, or bits with BIT),
// Redis's way: negative from the end, clipped to the string. Empty if
// first > last.
struct BitRange {
  int64_t first = 0, last = -1;
};
BitRange ClipRange(int64_t start, int64_t end, bool in_bits, int64_t len) {
  const int64_t total = in_bits ? len * 8 : len;
  if (start < 0) start += total;
  if (end < 0) end += total;
  if (start < 0) start = 0;
  if (end < 0) end = 0;
  if (end >= total) end = total - 1;
  if (start > end) return {};
  return in_bits ? BitRange{start, end} : BitRange{start * 8, end * 8 + 7};
}

int64_t CountBits(std::string_view s, BitRange r) {
  if (r.first > r.last) return 0;
  int64_t n = 0;
  const int64_t first_byte = r.first >> 3, last_byte = r.last >> 3;
  for (int64_t i = first_byte; i <= last_byte; ++i) {
    auto b = static_cast<uint8_t>(s[static_cast<size_t>(i)]);
    if (i == first_byte) b &= static_cast<uint8_t>(0xFFu >> (r.first & 7));
    if (i == last_byte) b &= static_cast<uint8_t>(0xFFu << (7 - (r.last & 7)));
    n += std::popcount(b);
  }
  return n;
}

// BITCOUNT key [start end [BYTE|BIT]]. As Redis 7.0, a missing key counts 0
// before the range is read.
void BitcountRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  std::string raw;
  Value v;
  bool found = false;
  if (!ReadBits(ctx, args[1], &raw, &v, &found, reply)) return;
  if (!found) return reply->Integer(0);
  const auto len = static_cast<int64_t>(v.payload.size());
  BitRange r{0, len * 8 - 1};
  if (args.size() == 4 || args.size() == 5) {
    auto start = ParseInt64(args[2]);
    if (!start) return reply->Error(kErrNotInteger);
    auto end = ParseInt64(args[3]);
    if (!end) return reply->Error(kErrNotInteger);
    if (*start < 0 && *end < 0 && *start > *end) return reply->Integer(0);
    bool in_bits = false;
    if (args.size() == 5) {
      if (EqualsIgnoreCase(args[4], "bit")) {
        in_bits = true;
      } else if (!EqualsIgnoreCase(args[4], "byte")) {
        return reply->Error(kErrSyntax);
      }
    }
    r = ClipRange(*start, *end, in_bits, len);
  } else if (args.size() != 2) {
    return reply->Error(kErrSyntax);
  }
  reply->Integer(CountBits(v.payload, r));
}

// BITPOS key bit [start [end [BYTE|BIT]]]: the first bit set to `bit` in the
// range. A missing key is all zeros. Without an end, the string counts as
// followed by zeros (a search for 0 through ones answers the bit after it);
// with one, nothing found is -1.
void BitposRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  auto bit = ParseInt64(args[2]);
  if (!bit) return reply->Error(kErrNotInteger);
  if (*bit != 0 && *bit != 1) return reply->Error("ERR The bit argument must be 1 or 0.");
  std::string raw;
  Value v;
  bool found = false;
  if (!ReadBits(ctx, args[1], &raw, &v, &found, reply)) return;
  if (!found) return reply->Integer(*bit ? -1 : 0);
  const auto len = static_cast<int64_t>(v.payload.size());
  BitRange r{0, len * 8 - 1};
  bool end_given = false;
  if (args.size() >= 4 && args.size() <= 6) {
    auto start = ParseInt64(args[3]);
    if (!start) return reply->Error(kErrNotInteger);
    bool in_bits = false;
    if (args.size() == 6) {
      if (EqualsIgnoreCase(args[5], "bit")) {
        in_bits = true;
      } else if (!EqualsIgnoreCase(args[5], "byte")) {
        return reply->Error(kErrSyntax);
      }
    }
    int64_t end = in_bits ? len * 8 + 7 : len - 1;
    if (args.size() >= 5) {
      auto e = ParseInt64(args[4]);
      if (!e) return reply->Error(kErrNotInteger);
      end = *e;
      end_given = true;
    }
    r = ClipRange(*start, end, in_bits, len);
  } else if (args.size() != 3) {
    return reply->Error(kErrSyntax);
  }
  if (r.first > r.last) return reply->Integer(-1);
  for (int64_t i = r.first; i <= r.last;) {
    // A whole byte at a time where it lies inside the range.
    if ((i & 7) == 0 && i + 7 <= r.last) {
      const auto b = static_cast<uint8_t>(v.payload[static_cast<size_t>(i >> 3)]);
      if (b == (*bit ? 0x00 : 0xFF)) {
        i += 8;
        continue;
      }
    }
    if (GetBit(v.payload, static_cast<uint64_t>(i)) == *bit) return reply->Integer(i);
    ++i;
  }
  if (*bit == 1 || end_given) return reply->Integer(-1);
  reply->Integer(r.last + 1);
}

void GetbitRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  auto off = ParseBitOffset(args[2], ctx.limits->proto_max_bulk_len);
  if (!off) return reply->Error(kErrBitOffset);
  std::string raw;
  Value v;
  bool found = false;
  if (!ReadBits(ctx, args[1], &raw, &v, &found, reply)) return;
  reply->Integer(found ? GetBit(v.payload, static_cast<uint64_t>(*off)) : 0);
}

// SETBIT key offset 0|1. Entry args: key offset bit.
bool SetbitPrepare(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply) {
  if (!ParseBitOffset(args[2], ctx.limits->proto_max_bulk_len)) return reply->Error(kErrBitOffset), false;
  auto on = ParseInt64(args[3]);
  if (!on || (*on != 0 && *on != 1)) return reply->Error(kErrBitValue), false;
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

Status SetbitApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const auto off = static_cast<uint64_t>(*ParseInt64(e.args[1]));
  const int on = e.args[2] == "1" ? 1 : 0;
  Status st;
  auto old = GetStringForWrite(txn, e.db, e.args[0], reply, &st);
  if (!old) return st;
  std::string& s = old->payload;
  const int was = GetBit(s, off);
  if (s.size() <= (off >> 3)) s.resize((off >> 3) + 1, '\0');
  PutBit(s, off, on);
  st = PutString(txn, e.db, e.args[0], s, old->expire_at_ms);
  if (st.ok()) reply->Integer(was);
  return st;
}

// BITOP AND|OR|XOR|NOT destkey key [key ...]. Entry args: destkey op key
// [key ...] (the destination first: its slot is the entry's).
bool BitopPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  std::string op = ToLower(args[1]);
  if (op != "and" && op != "or" && op != "xor" && op != "not") return reply->Error(kErrSyntax), false;
  if (op == "not" && args.size() != 4) {
    return reply->Error("ERR BITOP NOT must be called with a single source key."), false;
  }
  SetArgs(entry, std::string(args[2]), op);
  entry->args.insert(entry->args.end(), args.begin() + 3, args.end());
  return true;
}

Status BitopApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& op = e.args[1];
  Status st;
  // Every source's type first (WRONGTYPE before anything changes); then
  // each source folded into the result as it is read, so memory stays at
  // the result and one source however many sources are named.
  for (size_t i = 2; i < e.args.size(); ++i) {
    if (!GetStringForWrite(txn, e.db, e.args[i], reply, &st)) return st;
  }
  std::string out;
  size_t shortest = SIZE_MAX;
  for (size_t i = 2; i < e.args.size(); ++i) {
    auto s = GetStringForWrite(txn, e.db, e.args[i], reply, &st);
    if (!s) return st;
    const std::string& src = s->payload;
    if (i == 2) {
      out = src;
      if (op == "not") {
        for (char& c : out) c = static_cast<char>(~static_cast<uint8_t>(c));
      }
    } else {
      if (out.size() < src.size()) out.resize(src.size(), '\0');
      for (size_t j = 0; j < src.size(); ++j) {
        const auto a = static_cast<uint8_t>(out[j]), b = static_cast<uint8_t>(src[j]);
        out[j] = static_cast<char>(op == "and" ? (a & b) : op == "or" ? (a | b) : (a ^ b));
      }
    }
    shortest = std::min(shortest, src.size());
  }
  // AND: past the shortest source, a missing byte counts as 0.
  if (op == "and" && shortest < out.size()) std::fill(out.begin() + static_cast<std::ptrdiff_t>(shortest), out.end(), '\0');
  const size_t longest = out.size();
  if (longest > 0) {
    st = PutString(txn, e.db, e.args[0], out, 0);  // a new value: no TTL, whatever was there
  } else {
    bool existed = false;
    st = txn.Delete(e.db, e.args[0], &existed);
  }
  if (st.ok()) reply->Integer(static_cast<int64_t>(longest));
  return st;
}

// ---- BITFIELD

enum class Overflow { kWrap, kSat, kFail };

struct FieldOp {
  char kind;  // 'g'et, 's'et, 'i'ncrby
  bool is_signed;
  int bits;
  int64_t offset;
  int64_t value;  // SET's value, INCRBY's increment
  Overflow overflow;
};

// Parses BITFIELD's operations from args[2]; false: the error is replied.
bool ParseFieldOps(Args args, int64_t max_bulk_len, std::vector<FieldOp>* ops, resp::Writer* reply) {
  Overflow overflow = Overflow::kWrap;
  for (size_t j = 2; j < args.size(); ++j) {
    const size_t more = args.size() - j - 1;
    char kind = 0;
    if (EqualsIgnoreCase(args[j], "get") && more >= 2) {
      kind = 'g';
    } else if (EqualsIgnoreCase(args[j], "set") && more >= 3) {
      kind = 's';
    } else if (EqualsIgnoreCase(args[j], "incrby") && more >= 3) {
      kind = 'i';
    } else if (EqualsIgnoreCase(args[j], "overflow") && more >= 1) {
      std::string_view o = args[++j];
      if (EqualsIgnoreCase(o, "wrap")) {
        overflow = Overflow::kWrap;
      } else if (EqualsIgnoreCase(o, "sat")) {
        overflow = Overflow::kSat;
      } else if (EqualsIgnoreCase(o, "fail")) {
        overflow = Overflow::kFail;
      } else {
        return reply->Error("ERR Invalid OVERFLOW type specified"), false;
      }
      continue;
    } else {
      return reply->Error(kErrSyntax), false;
    }
    // The type: i1..i64 or u1..u63 (the letter in lower case only, as Redis).
    std::string_view type = args[j + 1];
    const bool is_signed = !type.empty() && type[0] == 'i';
    auto bits = type.empty() || (type[0] != 'i' && type[0] != 'u') ? std::nullopt : ParseInt64(type.substr(1));
    if (!bits || *bits < 1 || *bits > (is_signed ? 64 : 63)) return reply->Error(kErrBitfieldType), false;
    auto offset = ParseBitOffset(args[j + 2], max_bulk_len, static_cast<int>(*bits));
    if (!offset) return reply->Error(kErrBitOffset), false;
    int64_t value = 0;
    if (kind != 'g') {
      auto v = ParseInt64(args[j + 3]);
      if (!v) return reply->Error(kErrNotInteger), false;
      value = *v;
    }
    ops->push_back({kind, is_signed, static_cast<int>(*bits), *offset, value, overflow});
    j += kind == 'g' ? 2 : 3;
  }
  return true;
}

// The field's bits as an unsigned number (bits beyond the string are 0).
uint64_t ReadField(std::string_view s, int64_t offset, int bits) {
  uint64_t v = 0;
  for (int i = 0; i < bits; ++i) v = (v << 1) | static_cast<uint64_t>(GetBit(s, static_cast<uint64_t>(offset + i)));
  return v;
}

void WriteField(std::string& s, int64_t offset, int bits, uint64_t v) {
  for (int i = 0; i < bits; ++i) PutBit(s, static_cast<uint64_t>(offset + i), static_cast<int>((v >> (bits - 1 - i)) & 1));
}

// The low `bits` bits of v, sign-extended when signed.
int64_t Truncate(uint64_t v, int bits, bool is_signed) {
  if (bits < 64) {
    v &= (uint64_t{1} << bits) - 1;
    if (is_signed && (v >> (bits - 1)) & 1) v |= ~uint64_t{0} << bits;
  }
  return static_cast<int64_t>(v);
}

int64_t FieldValue(std::string_view s, const FieldOp& op) {
  return Truncate(ReadField(s, op.offset, op.bits), op.bits, op.is_signed);
}

// base + incr in the field's type under its overflow rule; nullopt: FAIL.
// An unsigned SET value is read as Redis reads it (a negative one is huge).
std::optional<int64_t> Fit(const FieldOp& op, __int128 base, __int128 incr) {
  const __int128 sum = base + incr;
  const __int128 max = op.is_signed ? (op.bits == 64 ? INT64_MAX : (__int128{1} << (op.bits - 1)) - 1)
                                    : (__int128{1} << op.bits) - 1;
  const __int128 min = op.is_signed ? -max - 1 : 0;
  if (sum >= min && sum <= max) return static_cast<int64_t>(sum);
  if (op.overflow == Overflow::kFail) return std::nullopt;
  if (op.overflow == Overflow::kSat) {
    bool high = sum > max;
    if (op.is_signed && op.bits < 64) {
      // As Redis decides it: it takes max - value in wrapping 64-bit
      // arithmetic, so a SET far below the range (value < max - INT64_MAX)
      // wraps that difference negative and saturates to max.
      const int64_t maxincr = static_cast<int64_t>(static_cast<uint64_t>(max) - static_cast<uint64_t>(base));
      high = base > max || incr > maxincr;
    }
    return static_cast<int64_t>(high ? max : min);
  }
  return Truncate(static_cast<uint64_t>(sum), op.bits, op.is_signed);  // wrap: modulo 2^bits
}

// Answers each operation on `s` (changed in place by SET and INCRBY).
void RunFieldOps(std::string& s, const std::vector<FieldOp>& ops, resp::Writer* reply) {
  reply->ArrayHeader(ops.size());
  for (const FieldOp& op : ops) {
    const int64_t old = FieldValue(s, op);
    if (op.kind == 'g') {
      reply->Integer(old);
      continue;
    }
    const __int128 value = op.is_signed ? __int128{op.value} : __int128{static_cast<uint64_t>(op.value)};
    std::optional<int64_t> next =
        op.kind == 's' ? Fit(op, value, 0) : Fit(op, op.is_signed ? __int128{old} : __int128{static_cast<uint64_t>(old)}, op.value);
    if (!next) {
      reply->NullBulk();
      continue;
    }
    WriteField(s, op.offset, op.bits, static_cast<uint64_t>(*next));
    reply->Integer(op.kind == 's' ? old : *next);
  }
}

// BITFIELD_RO key [GET type offset ...]
void BitfieldRoRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  std::vector<FieldOp> ops;
  if (!ParseFieldOps(args, ctx.limits->proto_max_bulk_len, &ops, reply)) return;
  for (const FieldOp& op : ops) {
    if (op.kind != 'g') return reply->Error("ERR BITFIELD_RO only supports the GET subcommand");
  }
  std::string raw;
  Value v;
  bool found = false;
  if (!ReadBits(ctx, args[1], &raw, &v, &found, reply)) return;
  std::string s = found ? std::string(v.payload) : std::string();
  RunFieldOps(s, ops, reply);
}

// BITFIELD key [GET ...] [SET ...] [INCRBY ...] [OVERFLOW ...]: a write
// (checked at prepare); entry args: key and the operations as given.
bool BitfieldPrepare(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply) {
  std::vector<FieldOp> ops;
  if (!ParseFieldOps(args, ctx.limits->proto_max_bulk_len, &ops, reply)) return false;
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

Status BitfieldApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  std::vector<std::string_view> args = {"bitfield"};
  args.insert(args.end(), e.args.begin(), e.args.end());
  std::vector<FieldOp> ops;
  std::string ignored;
  resp::Writer quiet(&ignored, 2);
  // The limit was checked where it was prepared.
  if (!ParseFieldOps(args, INT64_MAX >> 3, &ops, &quiet)) {
    reply->Error(kErrSyntax);
    return Status::Ok();
  }
  Status st;
  auto old = GetStringForWrite(txn, e.db, e.args[0], reply, &st);
  if (!old) return st;
  int64_t highest = -1;  // the last bit a SET or INCRBY reaches
  for (const FieldOp& op : ops) {
    if (op.kind != 'g') highest = std::max(highest, op.offset + op.bits - 1);
  }
  if (highest < 0) {  // GETs only: changes nothing
    RunFieldOps(old->payload, ops, reply);
    return Status::Ok();
  }
  std::string& s = old->payload;
  // As Redis: the string grows to the farthest bit written, even by an
  // operation that then fails on overflow.
  if (s.size() <= static_cast<size_t>(highest >> 3)) s.resize(static_cast<size_t>(highest >> 3) + 1, '\0');
  RunFieldOps(s, ops, reply);
  return PutString(txn, e.db, e.args[0], s, old->expire_at_ms);
}

}  // namespace

void AppendBitmapCommands(std::vector<CommandSpec>* out) {
  constexpr uint32_t kR = kCmdReadonly | kCmdFast;
  constexpr uint32_t kW = kCmdWrite | kCmdDenyOom;
  // name, arity, flags, first, last, step, group, op, read, prepare, apply
  out->insert(out->end(), {
      {"getbit", 3, kR, 1, 1, 1, "bitmap", 0, GetbitRead},
      {"bitcount", -2, kCmdReadonly, 1, 1, 1, "bitmap", 0, BitcountRead},
      {"bitpos", -3, kCmdReadonly, 1, 1, 1, "bitmap", 0, BitposRead},
      {"bitfield_ro", -2, kR, 1, 1, 1, "bitmap", 0, BitfieldRoRead},
      {"setbit", 4, kW, 1, 1, 1, "bitmap", 100, nullptr, SetbitPrepare, SetbitApply},
      {"bitop", -4, kW, 2, -1, 1, "bitmap", 101, nullptr, BitopPrepare, BitopApply},
      {"bitfield", -2, kW, 1, 1, 1, "bitmap", 102, nullptr, BitfieldPrepare, BitfieldApply},
  });
}

}  // namespace shoal::kv
