// DUMP and RESTORE in Redis's serialization format (an RDB object, the RDB
// version, a CRC-64 of both), so values move between shoal and redis-server
// and backups made by either restore on the other.
//
// DUMP writes the plain RDB encodings that every Redis since 2.x restores:
// a string (type 0) as its bytes, a list (1) / set (2) / hash (4) as counted
// strings, a sorted set (5) as members with binary doubles, RDB version 10.
// RESTORE reads what redis-server 7.0 writes too: integer and LZF-compressed
// strings, listpacks (hash 16, sorted set 17, quicklist 18 nodes), intsets
// (11), and the plain types; older ziplist encodings are refused.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/strings.h"
#include "kv/collection.h"
#include "kv/command_util.h"
#include "kv/commands.h"
#include "kv/string_commands.h"

namespace shoal::kv {
namespace {

constexpr uint16_t kRdbVersion = 10;  // redis-server 7.0's
// The most elements one RESTORE carries (its log entry's arguments).
constexpr size_t kRestoreItemsMax = 1u << 22;
enum RdbType : uint8_t {
  kRdbString = 0, kRdbList = 1, kRdbSet = 2, kRdbZset = 3, kRdbHash = 4, kRdbZset2 = 5,
  kRdbSetIntset = 11, kRdbHashListpack = 16, kRdbZsetListpack = 17, kRdbListQuicklist2 = 18,
};

// ---- CRC-64 (Jones polynomial, reflected), as Redis checks payloads.
uint64_t Crc64(std::string_view data) {
  static const auto table = [] {
    std::array<uint64_t, 256> t{};
    constexpr uint64_t kPoly = 0x95ac9329ac4bc9b5ULL;  // 0xad93d23594c935a9, bits reversed
    for (uint64_t i = 0; i < 256; ++i) {
      uint64_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint64_t crc = 0;
  for (unsigned char ch : data) crc = table[(crc ^ ch) & 0xff] ^ (crc >> 8);
  return crc;
}

// ---- writing
void PutLen(std::string* out, uint64_t n) {
  if (n < (1 << 6)) {
    out->push_back(static_cast<char>(n));
  } else if (n < (1 << 14)) {
    out->push_back(static_cast<char>(0x40 | (n >> 8)));
    out->push_back(static_cast<char>(n & 0xff));
  } else if (n <= UINT32_MAX) {
    out->push_back(static_cast<char>(0x80));
    for (int s = 24; s >= 0; s -= 8) out->push_back(static_cast<char>((n >> s) & 0xff));
  } else {
    out->push_back(static_cast<char>(0x81));
    for (int s = 56; s >= 0; s -= 8) out->push_back(static_cast<char>((n >> s) & 0xff));
  }
}
void PutRdbString(std::string* out, std::string_view s) {
  PutLen(out, s.size());
  out->append(s);
}
void PutDouble(std::string* out, double d) {
  uint64_t bits = 0;
  std::memcpy(&bits, &d, 8);
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
}

// ---- reading
class Reader {
 public:
  explicit Reader(std::string_view data) : d_(data) {}
  bool ok() const { return ok_; }
  bool done() const { return p_ == d_.size(); }
  uint8_t Byte() {
    if (p_ >= d_.size()) return Fail(), 0;
    return static_cast<uint8_t>(d_[p_++]);
  }
  std::string_view Take(uint64_t n) {
    if (n > d_.size() - p_) return Fail(), std::string_view();
    std::string_view s = d_.substr(p_, n);
    p_ += n;
    return s;
  }
  // A length; *special gets the encoding of a specially encoded string
  // (0-3) instead, if allowed.
  uint64_t Len(int* special = nullptr) {
    const uint8_t b = Byte();
    switch (b >> 6) {
      case 0:
        return b & 0x3f;
      case 1:
        return (static_cast<uint64_t>(b & 0x3f) << 8) | Byte();
      case 2: {
        const int bytes = b == 0x80 ? 4 : (b == 0x81 ? 8 : 0);
        if (bytes == 0) return Fail(), 0;
        uint64_t n = 0;
        for (int i = 0; i < bytes; ++i) n = (n << 8) | Byte();
        return n;
      }
      default:
        if (special == nullptr) return Fail(), 0;
        *special = b & 0x3f;
        return 0;
    }
  }
  std::string String() {
    int special = -1;
    const uint64_t n = Len(&special);
    if (!ok_) return {};
    if (special < 0) return std::string(Take(n));
    if (special <= 2) {  // an integer, little endian, 1/2/4 bytes
      const int bytes = 1 << special;
      uint64_t v = 0;
      for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(Byte()) << (8 * i);
      const int shift = 64 - 8 * bytes;
      return std::to_string(static_cast<int64_t>(v << shift) >> shift);
    }
    if (special == 3) {  // LZF
      const uint64_t clen = Len(), len = Len();
      std::string_view in = Take(clen);
      std::string out;
      if (!ok_ || !Lzf(in, len, &out)) return Fail(), std::string();
      return out;
    }
    return Fail(), std::string();
  }
  double BinaryDouble() {
    uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) bits |= static_cast<uint64_t>(Byte()) << (8 * i);
    double d = 0;
    std::memcpy(&d, &bits, 8);
    return d;
  }
  // RDB_TYPE_ZSET's score: a length byte (253 nan, 254 +inf, 255 -inf),
  // then that many characters.
  double StringDouble() {
    const uint8_t n = Byte();
    if (n == 253) return std::nan("");
    if (n == 254) return INFINITY;
    if (n == 255) return -INFINITY;
    auto d = ParseDouble(Take(n));
    if (!d) return Fail(), 0;
    return *d;
  }
  void Fail() { ok_ = false; }

 private:
  // LZF (liblzf's format): literal runs "000lllll" + l+1 bytes, back
  // references "lllooooo oooooooo" (len 7: one more length byte).
  static bool Lzf(std::string_view in, uint64_t len, std::string* out) {
    if (len > (512u << 20)) return false;
    out->reserve(std::min<uint64_t>(len, 1 << 20));
    size_t i = 0;
    while (i < in.size()) {
      const auto ctrl = static_cast<uint8_t>(in[i++]);
      if (ctrl < 32) {
        const size_t n = ctrl + 1u;
        if (n > in.size() - i || out->size() + n > len) return false;
        out->append(in.substr(i, n));
        i += n;
      } else {
        size_t n = ctrl >> 5;
        if (n == 7) {
          if (i >= in.size()) return false;
          n += static_cast<uint8_t>(in[i++]);
        }
        if (i >= in.size()) return false;
        const size_t back = ((ctrl & 0x1fu) << 8) + static_cast<uint8_t>(in[i++]) + 1;
        n += 2;
        if (back > out->size() || out->size() + n > len) return false;
        const size_t from = out->size() - back;
        for (size_t k = 0; k < n; ++k) out->push_back((*out)[from + k]);  // may overlap itself
      }
    }
    return out->size() == len;
  }

  std::string_view d_;
  size_t p_ = 0;
  bool ok_ = true;
};

// The entries of a listpack (strings; integers as their decimal text).
bool ReadListpack(std::string_view lp, std::vector<std::string>* out) {
  const size_t had = out->size();  // a quicklist's earlier nodes
  if (lp.size() < 7) return false;
  uint32_t total = 0;
  for (int i = 0; i < 4; ++i) total |= static_cast<uint32_t>(static_cast<uint8_t>(lp[static_cast<size_t>(i)])) << (8 * i);
  if (total != lp.size() || static_cast<uint8_t>(lp.back()) != 0xff) return false;
  size_t p = 6;
  auto byte = [&](size_t at) { return static_cast<uint8_t>(lp[at]); };
  while (p < lp.size() - 1) {
    const uint8_t b = byte(p);
    size_t hdr = 1, len = 0;
    int64_t iv = 0;
    bool is_int = true;
    auto le = [&](size_t at, int n) {
      uint64_t v = 0;
      for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(byte(at + static_cast<size_t>(i))) << (8 * i);
      return v;
    };
    auto sign = [](uint64_t v, int bits) { return static_cast<int64_t>(v << (64 - bits)) >> (64 - bits); };
    if ((b & 0x80) == 0) {
      iv = b & 0x7f;
    } else if ((b & 0xc0) == 0x80) {
      is_int = false;
      len = b & 0x3f;
    } else if ((b & 0xe0) == 0xc0) {
      if (p + 1 >= lp.size()) return false;
      hdr = 2;
      iv = sign((static_cast<uint64_t>(b & 0x1f) << 8) | byte(p + 1), 13);
    } else if ((b & 0xf0) == 0xe0) {
      if (p + 1 >= lp.size()) return false;
      is_int = false;
      hdr = 2;
      len = (static_cast<size_t>(b & 0x0f) << 8) | byte(p + 1);
    } else if (b == 0xf0) {
      if (p + 5 > lp.size()) return false;
      is_int = false;
      hdr = 5;
      len = static_cast<size_t>(le(p + 1, 4));
    } else if (b >= 0xf1 && b <= 0xf4) {
      const int n = b == 0xf1 ? 2 : b == 0xf2 ? 3 : b == 0xf3 ? 4 : 8;
      if (p + 1 + static_cast<size_t>(n) > lp.size()) return false;
      hdr = 1 + static_cast<size_t>(n);
      iv = sign(le(p + 1, n), 8 * n);
    } else {
      return false;
    }
    const size_t entry = hdr + len;
    if (entry > lp.size() - 1 - p) return false;
    out->push_back(is_int ? std::to_string(iv) : std::string(lp.substr(p + hdr, len)));
    // The back length's size, as Redis's listpack writes it.
    const size_t back = entry <= 127 ? 1 : entry < 16383 ? 2 : entry < 2097151 ? 3 : entry < 268435455 ? 4 : 5;
    p += entry + back;
  }
  uint16_t count = static_cast<uint16_t>(byte(4) | (byte(5) << 8));
  return p == lp.size() - 1 && (count == 65535 || count == out->size() - had);
}

bool ReadIntset(std::string_view is, std::vector<std::string>* out) {
  if (is.size() < 8) return false;
  auto le = [&](size_t at, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(is[at + i])) << (8 * i);
    return v;
  };
  const auto width = static_cast<size_t>(le(0, 4));
  const uint64_t n = le(4, 4);
  if ((width != 2 && width != 4 && width != 8) || is.size() != 8 + n * width) return false;
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t v = le(8 + static_cast<size_t>(i) * width, width);
    const int shift = static_cast<int>(64 - 8 * width);
    out->push_back(std::to_string(static_cast<int64_t>(v << shift) >> shift));
  }
  return true;
}

// A decoded value: its type and, for a string, [bytes]; a list or set, its
// elements; a hash, field value ...; a sorted set, member score ... (the
// score as text that parses back to the same double).
struct Decoded {
  ValueType type = ValueType::kString;
  std::vector<std::string> items;
};

std::string ScoreText(double d) {
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", d);
  return buf;
}

// Checks the footer and decodes the object; false: not a valid payload
// (*bad_footer: the version or checksum).
bool DecodePayload(std::string_view payload, uint64_t bytes_max, Decoded* out, bool* bad_footer, bool* too_big) {
  *too_big = false;
  *bad_footer = true;
  if (payload.size() < 10) return false;
  const std::string_view body = payload.substr(0, payload.size() - 10);
  const auto ver = static_cast<uint16_t>(static_cast<uint8_t>(payload[payload.size() - 10]) |
                                         (static_cast<uint8_t>(payload[payload.size() - 9]) << 8));
  if (ver > kRdbVersion) return false;
  uint64_t crc = 0;
  for (int i = 0; i < 8; ++i) crc |= static_cast<uint64_t>(static_cast<uint8_t>(payload[payload.size() - 8 + static_cast<size_t>(i)])) << (8 * i);
  if (crc != Crc64(payload.substr(0, payload.size() - 8))) return false;
  *bad_footer = false;
  Reader r(body);
  const uint8_t type = r.Byte();
  std::vector<std::string>& items = out->items;
  // Decoding stops once the value is bigger than one log entry may be.
  uint64_t decoded = 0;
  size_t counted = 0;
  auto within = [&] {
    for (; counted < items.size(); ++counted) decoded += items[counted].size() + 16;
    if (items.size() > kRestoreItemsMax || decoded > bytes_max) {
      *too_big = true;
      r.Fail();
    }
    return r.ok();
  };
  auto strings = [&](uint64_t n) {
    for (uint64_t i = 0; i < n && within(); ++i) items.push_back(r.String());
  };
  auto blob_entries = [&](bool (*read)(std::string_view, std::vector<std::string>*)) {
    std::string blob = r.String();
    if (r.ok() && !read(blob, &items)) r.Fail();
  };
  switch (type) {
    case kRdbString:
      out->type = ValueType::kString;
      items.push_back(r.String());
      break;
    case kRdbList:
      out->type = ValueType::kList;
      strings(r.Len());
      break;
    case kRdbSet:
      out->type = ValueType::kSet;
      strings(r.Len());
      break;
    case kRdbHash:
      out->type = ValueType::kHash;
      strings(2 * r.Len());
      break;
    case kRdbZset:
    case kRdbZset2: {
      out->type = ValueType::kZSet;
      const uint64_t n = r.Len();
      for (uint64_t i = 0; i < n && within(); ++i) {
        items.push_back(r.String());
        const double d = type == kRdbZset2 ? r.BinaryDouble() : r.StringDouble();
        if (std::isnan(d)) r.Fail();
        items.push_back(ScoreText(d));
      }
      break;
    }
    case kRdbSetIntset:
      out->type = ValueType::kSet;
      blob_entries(ReadIntset);
      break;
    case kRdbHashListpack:
      out->type = ValueType::kHash;
      blob_entries(ReadListpack);
      break;
    case kRdbZsetListpack: {
      out->type = ValueType::kZSet;
      blob_entries(ReadListpack);
      for (size_t i = 1; i < items.size() && r.ok(); i += 2) {
        auto d = ParseDouble(items[i]);
        if (!d) r.Fail();
      }
      break;
    }
    case kRdbListQuicklist2: {
      out->type = ValueType::kList;
      const uint64_t nodes = r.Len();
      for (uint64_t i = 0; i < nodes && within(); ++i) {
        const uint64_t container = r.Len();
        if (container == 1) {  // plain: one element
          items.push_back(r.String());
        } else if (container == 2) {  // packed: a listpack
          blob_entries(ReadListpack);
        } else {
          r.Fail();
        }
      }
      break;
    }
    default:
      return false;
  }
  if (!within() || !r.done()) return false;
  if (out->type != ValueType::kString && items.empty()) return false;  // no empty collections
  if (out->type == ValueType::kHash && items.size() % 2 != 0) return false;
  if (out->type == ValueType::kZSet && items.size() % 2 != 0) return false;
  // Duplicates (a set member, hash field or sorted set member twice) are
  // refused, as Redis refuses them.
  if (out->type == ValueType::kSet || out->type == ValueType::kHash || out->type == ValueType::kZSet) {
    const size_t step = out->type == ValueType::kSet ? 1 : 2;
    std::set<std::string_view> seen;
    for (size_t i = 0; i < items.size(); i += step) {
      if (!seen.insert(items[i]).second) return false;
    }
  }
  return true;
}

// DUMP key
void DumpRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  std::string raw;
  Value v;
  bool found = false;
  if (!ReadLive(ctx, args[1], &raw, &v, &found, reply)) return;
  if (!found) return reply->NullBulk();
  std::string out;
  if (v.type == ValueType::kString) {
    out.push_back(static_cast<char>(kRdbString));
    PutRdbString(&out, v.payload);
  } else {
    CollectionRead c(ctx, v.type);
    if (!c.Open(args[1], reply)) return;
    const RdbType t = v.type == ValueType::kList ? kRdbList
                      : v.type == ValueType::kSet ? kRdbSet
                      : v.type == ValueType::kHash ? kRdbHash
                                                   : kRdbZset2;
    out.push_back(static_cast<char>(t));
    PutLen(&out, c.count());
    const bool ok = c.ForEach(
        {},
        [&](std::string_view element, std::string_view value) {
          if (t == kRdbList) {
            PutRdbString(&out, value);
          } else {
            PutRdbString(&out, element);
            if (t == kRdbHash) PutRdbString(&out, value);
            if (t == kRdbZset2) PutDouble(&out, DecodeScore(value));
          }
          return true;
        },
        reply);
    if (!ok) return;
  }
  reply->Bulk(SealDumpPayload(out));
}

// RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]. The
// payload is decoded here, so the entry carries plain elements. Entry
// args: key expire_at_ms (0: none) replace(0|1) type item ...
bool RestorePrepare(const PrepareContext& ctx, Args args, Entry* entry, resp::Writer* reply) {
  bool replace = false, absttl = false, idle = false, freq = false;
  for (size_t j = 4; j < args.size(); ++j) {
    const size_t more = args.size() - j - 1;
    if (EqualsIgnoreCase(args[j], "replace")) {
      replace = true;
    } else if (EqualsIgnoreCase(args[j], "absttl")) {
      absttl = true;
    } else if (EqualsIgnoreCase(args[j], "idletime") && more >= 1 && !freq) {
      auto v = ParseInt64(args[++j]);
      if (!v) return reply->Error(kErrNotInteger), false;
      if (*v < 0) return reply->Error("ERR Invalid IDLETIME value, must be >= 0"), false;
      idle = true;  // shoal keeps no access times: accepted, not kept
    } else if (EqualsIgnoreCase(args[j], "freq") && more >= 1 && !idle) {
      auto v = ParseInt64(args[++j]);
      if (!v) return reply->Error(kErrNotInteger), false;
      if (*v < 0 || *v > 255) return reply->Error("ERR Invalid FREQ value, must be >= 0 and <= 255"), false;
      freq = true;
    } else {
      return reply->Error(kErrSyntax), false;
    }
  }
  auto ttl = ParseInt64(args[2]);
  if (!ttl) return reply->Error(kErrNotInteger), false;
  if (*ttl < 0) return reply->Error("ERR Invalid TTL value, must be >= 0"), false;
  Decoded d;
  bool bad_footer = false, too_big = false;
  if (!DecodePayload(args[3], static_cast<uint64_t>(ctx.limits->proto_max_bulk_len), &d, &bad_footer, &too_big)) {
    if (too_big) {
      return reply->Error("ERR the value is too big to RESTORE at once (over proto-max-bulk-len bytes or " +
                          std::to_string(kRestoreItemsMax) + " elements)"),
             false;
    }
    return reply->Error(bad_footer ? "ERR DUMP payload version or checksum are wrong" : "ERR Bad data format"), false;
  }
  int64_t expire_at = 0;  // none
  if (*ttl > 0) {
    if (absttl) {
      expire_at = *ttl;
    } else if (__builtin_add_overflow(*ttl, ctx.now_ms, &expire_at)) {
      expire_at = INT64_MAX;
    }
  }
  SetArgs(entry, std::string(args[1]), std::to_string(expire_at), replace ? "1" : "0",
          std::to_string(static_cast<int>(d.type)));
  for (auto& item : d.items) entry->args.push_back(std::move(item));
  return true;
}

// The write that makes a restored collection, as its own command makes it:
// RPUSH, SADD, HSET or ZADD key ... (items from the entry's 5th argument).
// False: it does not prepare (not expected: the payload was checked).
bool MakerEntry(const Entry& e, ValueType type, const CommandSpec** spec, Entry* make) {
  const std::string_view maker = type == ValueType::kList  ? "rpush"
                                 : type == ValueType::kSet  ? "sadd"
                                 : type == ValueType::kHash ? "hset"
                                                            : "zadd";
  *spec = nullptr;
  for (const CommandSpec& s : DataCommands()) {
    if (s.name == maker) *spec = &s;
  }
  std::vector<std::string_view> words = {maker, e.args[0]};
  for (size_t i = 4; i < e.args.size(); ++i) {
    // ZADD takes score member; the entry holds member score.
    if (type == ValueType::kZSet && (i - 4) % 2 == 0 && i + 1 < e.args.size()) {
      words.push_back(e.args[i + 1]);
      words.push_back(e.args[i]);
      ++i;
    } else {
      words.push_back(e.args[i]);
    }
  }
  make->op = (*spec)->op;
  make->db = e.db;
  make->now_ms = e.now_ms;
  if ((*spec)->prepare == nullptr) {
    make->args.assign(words.begin() + 1, words.end());
    return true;
  }
  // The default limits, not this replica's: every replica prepares alike.
  static const Limits kDefaults;
  std::string ignored;
  resp::Writer quiet(&ignored, 2);
  PrepareContext pctx{e.db, e.now_ms, &kDefaults};
  return (*spec)->prepare(pctx, words, make, &quiet);
}

Status RestoreApply(ApplyTxn& txn, const Entry& e, const Limits& limits, resp::Writer* reply) {
  const std::string& key = e.args[0];
  const int64_t expire_at = *ParseInt64(e.args[1]);
  const bool replace = e.args[2] == "1";
  const auto type = static_cast<ValueType>(*ParseInt64(e.args[3]));
  auto old = txn.GetLive(e.db, key);
  if (!old.ok()) return old.status();
  if (*old && !replace) {
    reply->Error("BUSYKEY Target key name already exists.");
    return Status::Ok();
  }
  const CommandSpec* spec = nullptr;
  Entry make;
  if (type != ValueType::kString && !MakerEntry(e, type, &spec, &make)) {
    reply->Error("ERR Bad data format");  // before anything changes
    return Status::Ok();
  }
  bool existed = false;
  Status st = txn.Delete(e.db, key, &existed);
  if (!st.ok()) return st;
  if (expire_at != 0 && expire_at <= e.now_ms) {  // already expired: nothing to make
    reply->Simple("OK");
    return Status::Ok();
  }
  if (type == ValueType::kString) {
    st = PutString(txn, e.db, key, e.args[4], expire_at);
  } else {
    std::string ignored;
    resp::Writer quiet(&ignored, 2);
    st = spec->apply(txn, make, limits, &quiet);
    if (st.ok() && expire_at != 0) {
      auto made = txn.GetLive(e.db, key);
      if (!made.ok()) return made.status();
      if (*made) {
        Value v = DecodeOrDie(**made);
        st = txn.Put(e.db, key, EncodeValue(v.type, expire_at, v.payload));
      }
    }
  }
  if (st.ok()) reply->Simple("OK");
  return st;
}

}  // namespace

std::string SealDumpPayload(std::string_view body) {
  std::string out(body);
  out.push_back(static_cast<char>(kRdbVersion & 0xff));
  out.push_back(static_cast<char>(kRdbVersion >> 8));
  const uint64_t crc = Crc64(out);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  return out;
}

void AppendDumpCommands(std::vector<CommandSpec>* out) {
  out->insert(out->end(), {
      {"dump", 2, kCmdReadonly, 1, 1, 1, "keyspace", 0, DumpRead},
      {"restore", -4, kCmdWrite | kCmdDenyOom, 1, 1, 1, "keyspace", 109, nullptr, RestorePrepare, RestoreApply},
  });
}

}  // namespace shoal::kv
