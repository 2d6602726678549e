// Sorted set commands: ZADD and the rest of Redis's Z* family. A sorted set is
// a value of type zset holding its member count, with two element keys a
// member (see collection.h): its name under kZsetMemberTag, holding its
// score, and its place in (score, member) order under kZsetScoreTag, so that
// a score or rank range is a seek and a walk, in either direction.
// Ranks are counted by walking from the nearer end: O(rank), where Redis's
// skiplist is O(log n). Lexical ranges (BYLEX) behave as Redis's for members
// of one score, by a seek into that score.
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "common/strings.h"
#include "kv/collection.h"
#include "kv/command_util.h"
#include "kv/string_commands.h"

namespace shoal::kv {
namespace {

constexpr std::string_view kErrMinMaxFloat = "ERR min or max is not a float";
constexpr std::string_view kErrMinMaxLex = "ERR min or max not valid string range item";
constexpr std::string_view kErrNan = "ERR resulting score is not a number (NaN)";
constexpr std::string_view kErrPositive = "ERR value is out of range, must be positive";

struct Scored {
  std::string member;
  double score;
};

// ---- walking a sorted set's entries, on a read's view or in an apply

using NameFn = std::function<bool(std::string_view name, std::string_view value)>;
// forward(from, fn): names from the first at or after `from`; reverse(before,
// fn): from the last before `before` (empty: the last) down. false: failed
// (a read has replied; an apply's status says why).
struct Walker {
  std::function<bool(std::string_view, const NameFn&)> forward;
  std::function<bool(std::string_view, const NameFn&)> reverse;
};

Walker ReadWalker(CollectionRead& z, resp::Writer* reply) {
  return {[&z, reply](std::string_view from, const NameFn& fn) { return z.ForEachName(from, fn, reply); },
          [&z, reply](std::string_view before, const NameFn& fn) { return z.ForEachNameReverse(before, fn, reply); }};
}

Walker ApplyWalker(ApplyTxn& txn, uint16_t db, const std::string& key, Status* status) {
  return {[&txn, db, &key, status](std::string_view from, const NameFn& fn) {
            *status = txn.ForEachElement(db, key, fn, from);
            return status->ok();
          },
          [&txn, db, &key, status](std::string_view before, const NameFn& fn) {
            *status = txn.ForEachElementReverse(db, key, fn, before);
            return status->ok();
          }};
}

// Calls fn(member, score) for score-order entries, forward from `from` or
// backward from before `from`, while fn returns true.
template <typename Fn>
bool WalkScores(const Walker& w, bool rev, std::string_view from, Fn&& fn) {
  NameFn each = [&](std::string_view name, std::string_view value) {
    double s;
    std::string_view m;
    if (!DecodeScoreName(name, &s, &m)) return false;  // past the score entries
    return fn(m, DecodeScore(value));
  };
  return rev ? w.reverse(from, each) : w.forward(from.empty() ? kZsetScoreTag : from, each);
}

// ---- ranges

struct ScoreRange {
  double min = 0, max = 0;
  bool minex = false, maxex = false;
  bool GteMin(double v) const { return minex ? v > min : v >= min; }
  bool LteMax(double v) const { return maxex ? v < max : v <= max; }
  bool Empty() const { return min > max || (min == max && (minex || maxex)); }
};

// As Redis's zslParseRange: "(" makes a bound exclusive; strtod's syntax.
bool ParseScoreBound(std::string_view arg, double* v, bool* ex) {
  std::string buf(arg);
  const char* p = buf.c_str();
  *ex = *p == '(';
  if (*ex) ++p;
  char* end = nullptr;
  *v = std::strtod(p, &end);
  return *end == '\0' && !std::isnan(*v);
}

bool ParseScoreRange(std::string_view min, std::string_view max, ScoreRange* r) {
  return ParseScoreBound(min, &r->min, &r->minex) && ParseScoreBound(max, &r->max, &r->maxex);
}

struct LexBound {
  enum Kind { kMin, kValue, kMax } kind = kValue;
  std::string value;
  bool ex = false;
};

bool ParseLexBound(std::string_view arg, LexBound* b) {
  if (arg == "+" || arg == "-") {
    b->kind = arg == "+" ? LexBound::kMax : LexBound::kMin;
    b->ex = true;
    return true;
  }
  if (arg.empty() || (arg[0] != '(' && arg[0] != '[')) return false;
  b->kind = LexBound::kValue;
  b->ex = arg[0] == '(';
  b->value.assign(arg.substr(1));
  return true;
}

// Redis's sdscmplex: "-" below every string, "+" above.
int CompareLex(const LexBound& a, const LexBound& b) {
  if (a.kind != LexBound::kValue || b.kind != LexBound::kValue) {
    return a.kind == b.kind ? 0 : (a.kind < b.kind ? -1 : 1);
  }
  return a.value.compare(b.value) < 0 ? -1 : (a.value == b.value ? 0 : 1);
}

struct LexRange {
  LexBound min, max;
  bool GteMin(std::string_view v) const {
    if (min.kind != LexBound::kValue) return min.kind == LexBound::kMin;
    return min.ex ? v > min.value : v >= min.value;
  }
  bool LteMax(std::string_view v) const {
    if (max.kind != LexBound::kValue) return max.kind == LexBound::kMax;
    return max.ex ? v < max.value : v <= max.value;
  }
  bool Empty() const {
    int c = CompareLex(min, max);
    return c > 0 || (c == 0 && (min.ex || max.ex));
  }
};

enum class RangeBy { kRank, kScore, kLex };

// A range of ZRANGE and its forms, and of ZREMRANGEBY*, ZCOUNT, ZLEXCOUNT.
struct RangeQuery {
  RangeBy by = RangeBy::kRank;
  bool rev = false;
  int64_t start = 0, stop = 0;  // ranks
  ScoreRange score;
  LexRange lex;
  int64_t offset = 0, limit = -1;  // LIMIT (limit < 0: no limit)
  bool withscores = false;
};

// Parses the range bounds args[0] and args[1] for q.by (max first in args
// when q.rev and by score or lex). false: replied.
bool ParseBounds(std::string_view a, std::string_view b, RangeQuery* q, resp::Writer* reply) {
  if (q->rev && q->by != RangeBy::kRank) std::swap(a, b);
  switch (q->by) {
    case RangeBy::kRank: {
      auto s = ParseInt64(a), e = ParseInt64(b);
      if (!s || !e) return reply->Error(kErrNotInteger), false;
      q->start = *s;
      q->stop = *e;
      return true;
    }
    case RangeBy::kScore:
      if (!ParseScoreRange(a, b, &q->score)) return reply->Error(kErrMinMaxFloat), false;
      return true;
    case RangeBy::kLex:
      if (!ParseLexBound(a, &q->lex.min) || !ParseLexBound(b, &q->lex.max)) return reply->Error(kErrMinMaxLex), false;
      return true;
  }
  return true;
}

// Parses args (key min max [options]) the way Redis's zrangeGenericCommand
// does. `fixed`: the command fixes q's by and rev (ZRANGEBYSCORE, ZREVRANGE,
// ...), so only WITHSCORES and LIMIT may follow; `store`: ZRANGESTORE (no
// WITHSCORES). false: replied.
bool ParseRangeQuery(Args args, bool fixed, bool store, RangeQuery* q, resp::Writer* reply) {
  bool by_set = fixed, rev_set = fixed;
  bool has_limit = false;
  for (size_t j = 3; j < args.size(); ++j) {
    const size_t left = args.size() - j - 1;
    if (!store && EqualsIgnoreCase(args[j], "withscores")) {
      q->withscores = true;
    } else if (EqualsIgnoreCase(args[j], "limit") && left >= 2) {
      auto o = ParseInt64(args[j + 1]), c = ParseInt64(args[j + 2]);
      if (!o || !c) return reply->Error(kErrNotInteger), false;
      q->offset = *o;
      q->limit = *c;
      has_limit = true;
      j += 2;
    } else if (!rev_set && EqualsIgnoreCase(args[j], "rev")) {
      q->rev = true;
      rev_set = true;
    } else if (!by_set && EqualsIgnoreCase(args[j], "bylex")) {
      q->by = RangeBy::kLex;
      by_set = true;
    } else if (!by_set && EqualsIgnoreCase(args[j], "byscore")) {
      q->by = RangeBy::kScore;
      by_set = true;
    } else {
      return reply->Error(kErrSyntax), false;
    }
  }
  if (has_limit && q->limit != -1 && q->by == RangeBy::kRank) {  // a count of -1 is no limit: ignored
    return reply->Error("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"),
           false;
  }
  if (q->withscores && q->by == RangeBy::kLex) {
    return reply->Error("ERR syntax error, WITHSCORES not supported in combination with BYLEX"), false;
  }
  return ParseBounds(args[1], args[2], q, reply);
}

// Calls fn(member, score) for the members q selects from a sorted set of
// `count` members, in q's order. false: the walk failed.
template <typename Fn>
bool Select(const Walker& w, uint64_t count, const RangeQuery& q, Fn&& fn) {
  if (q.by == RangeBy::kRank) {
    const int64_t n = static_cast<int64_t>(count);
    int64_t start = q.start < 0 ? n + q.start : q.start;
    int64_t end = q.stop < 0 ? n + q.stop : q.stop;
    if (start < 0) start = 0;
    if (start > end || start >= n) return true;
    if (end >= n) end = n - 1;
    // Forward ranks [lo, hi], emitted upward (or downward when rev).
    const int64_t lo = q.rev ? n - 1 - end : start, hi = q.rev ? n - 1 - start : end;
    const bool from_front = lo <= n - 1 - hi;
    const int64_t skip = from_front ? lo : n - 1 - hi;
    int64_t index = 0;
    std::vector<Scored> got;
    const bool stream = from_front != q.rev;  // the walk's order is the reply's
    bool ok = WalkScores(w, !from_front, {}, [&](std::string_view m, double s) {
      if (index++ < skip) return true;
      if (stream) {
        fn(m, s);
      } else {
        got.push_back({std::string(m), s});
      }
      return index <= skip + (hi - lo);
    });
    for (auto it = got.rbegin(); it != got.rend(); ++it) fn(it->member, it->score);
    return ok;
  }
  if (q.offset < 0 || q.limit == 0) return true;
  int64_t offset = q.offset, limit = q.limit;
  bool started = false;
  // Takes a member once the range has begun; false when done.
  // As Redis: the first member must be in range, the offset's are then
  // skipped unchecked, and the rest taken while in range.
  auto take = [&](std::string_view m, double s, bool past) {
    const bool first = !started;
    started = true;
    if (first && past) return false;
    if (offset > 0) {
      --offset;
      return true;
    }
    if (past) return false;
    fn(m, s);
    return limit < 0 || --limit > 0;
  };
  if (q.by == RangeBy::kScore) {
    const ScoreRange& r = q.score;
    if (r.Empty()) return true;
    if (!q.rev) {
      return WalkScores(w, false, ScorePrefix(r.min), [&](std::string_view m, double s) {
        return (!started && !r.GteMin(s)) || take(m, s, !r.LteMax(s));
      });
    }
    return WalkScores(w, true, storage::PrefixEnd(ScorePrefix(r.max)), [&](std::string_view m, double s) {
      return (!started && !r.LteMax(s)) || take(m, s, !r.GteMin(s));
    });
  }
  const LexRange& r = q.lex;
  if (r.Empty()) return true;
  // As Redis: nothing unless the last member is >= min and the first <= max.
  // Members of one score are in byte order: seek into the first (last) score.
  std::string from;
  bool in_range = true;
  for (const bool rev : {false, true}) {
    bool ok = WalkScores(w, rev, {}, [&](std::string_view m, double s) {
      in_range = in_range && (rev ? r.GteMin(m) : r.LteMax(m));
      if (rev == q.rev && !q.rev && r.min.kind == LexBound::kValue) from = ScoreName(s, r.min.value);
      if (rev == q.rev && q.rev && r.max.kind == LexBound::kValue) {
        from = ScoreName(s, r.max.value) + std::string(1, '\0');
      }
      return false;
    });
    if (!ok) return false;
  }
  if (!in_range) return true;
  if (!q.rev) {
    return WalkScores(w, false, from, [&](std::string_view m, double s) {
      return (!started && !r.GteMin(m)) || take(m, s, !r.LteMax(m));
    });
  }
  return WalkScores(w, true, from, [&](std::string_view m, double s) {
    return (!started && !r.LteMax(m)) || take(m, s, !r.GteMin(m));
  });
}

void ReplyScored(const std::vector<Scored>& v, bool withscores, resp::Writer* reply) {
  const bool nested = withscores && reply->protocol() >= 3;
  reply->ArrayHeader(withscores && !nested ? 2 * v.size() : v.size());
  for (const auto& e : v) {
    if (nested) reply->ArrayHeader(2);
    reply->Bulk(e.member);
    if (withscores) reply->Double(e.score);
  }
}

// ---- reads

void ZscoreRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  CollectionRead z(ctx, ValueType::kZSet);
  std::optional<std::string> v;
  if (!z.Open(args[1], reply) || !z.Get(args[2], &v, reply)) return;
  v ? reply->Double(DecodeScore(*v)) : reply->NullBulk();
}

void ZmscoreRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  CollectionRead z(ctx, ValueType::kZSet);
  if (!z.Open(args[1], reply)) return;
  std::string out;
  resp::Writer items(&out, reply->protocol());
  for (size_t i = 2; i < args.size(); ++i) {
    std::optional<std::string> v;
    if (!z.Get(args[i], &v, reply)) return;
    v ? items.Double(DecodeScore(*v)) : items.NullBulk();
  }
  reply->ArrayHeader(args.size() - 2);
  reply->Raw(out);
}

void ZcardRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  CollectionRead z(ctx, ValueType::kZSet);
  if (!z.Open(args[1], reply)) return;
  reply->Integer(static_cast<int64_t>(z.count()));
}

// ZCOUNT and ZLEXCOUNT (args: key min max).
void CountRead(ReadContext& ctx, Args args, RangeBy by, resp::Writer* reply) {
  RangeQuery q;
  q.by = by;
  if (!ParseBounds(args[2], args[3], &q, reply)) return;
  CollectionRead z(ctx, ValueType::kZSet);
  if (!z.Open(args[1], reply)) return;
  int64_t n = 0;
  if (Select(ReadWalker(z, reply), z.count(), q, [&](std::string_view, double) { ++n; })) reply->Integer(n);
}
void ZcountRead(ReadContext& c, Args a, resp::Writer* r) { CountRead(c, a, RangeBy::kScore, r); }
void ZlexcountRead(ReadContext& c, Args a, resp::Writer* r) { CountRead(c, a, RangeBy::kLex, r); }

// The ZRANGE family: `base` fixes by and rev unless `generic`.
void RangeRead(ReadContext& ctx, Args args, bool generic, RangeQuery q, resp::Writer* reply) {
  if (!ParseRangeQuery(args.subspan(1), !generic, false, &q, reply)) return;
  CollectionRead z(ctx, ValueType::kZSet);
  if (!z.Open(args[1], reply)) return;
  std::vector<Scored> got;
  bool ok = Select(ReadWalker(z, reply), z.count(), q,
                   [&](std::string_view m, double s) { got.push_back({std::string(m), s}); });
  if (ok) ReplyScored(got, q.withscores, reply);
}

RangeQuery Fixed(RangeBy by, bool rev) {
  RangeQuery q;
  q.by = by;
  q.rev = rev;
  return q;
}
void ZrangeRead(ReadContext& c, Args a, resp::Writer* r) { RangeRead(c, a, true, RangeQuery(), r); }
void ZrevrangeRead(ReadContext& c, Args a, resp::Writer* r) { RangeRead(c, a, false, Fixed(RangeBy::kRank, true), r); }
void ZrangebyscoreRead(ReadContext& c, Args a, resp::Writer* r) {
  RangeRead(c, a, false, Fixed(RangeBy::kScore, false), r);
}
void ZrevrangebyscoreRead(ReadContext& c, Args a, resp::Writer* r) {
  RangeRead(c, a, false, Fixed(RangeBy::kScore, true), r);
}
void ZrangebylexRead(ReadContext& c, Args a, resp::Writer* r) { RangeRead(c, a, false, Fixed(RangeBy::kLex, false), r); }
void ZrevrangebylexRead(ReadContext& c, Args a, resp::Writer* r) {
  RangeRead(c, a, false, Fixed(RangeBy::kLex, true), r);
}

// ZRANK and ZREVRANK: counted from the end they are asked from.
void RankRead(ReadContext& ctx, Args args, bool rev, resp::Writer* reply) {
  CollectionRead z(ctx, ValueType::kZSet);
  std::optional<std::string> v;
  if (!z.Open(args[1], reply) || !z.Get(args[2], &v, reply)) return;
  if (!v) return reply->NullBulk();
  int64_t rank = 0;
  bool ok = WalkScores(ReadWalker(z, reply), rev, {}, [&](std::string_view m, double) {
    if (m == args[2]) return false;
    ++rank;
    return true;
  });
  if (ok) reply->Integer(rank);
}
void ZrankRead(ReadContext& c, Args a, resp::Writer* r) { RankRead(c, a, false, r); }
void ZrevrankRead(ReadContext& c, Args a, resp::Writer* r) { RankRead(c, a, true, r); }

void ZrandmemberRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  bool with_count = false, withscores = false;
  std::vector<std::pair<std::string, std::string>> picks;
  if (!ChooseRandom(ctx, args, ValueType::kZSet, "withscores", &with_count, &withscores, &picks, reply)) return;
  if (!with_count) return reply->Bulk(picks[0].first);
  std::vector<Scored> out;
  for (const auto& [m, v] : picks) out.push_back({m, DecodeScore(v)});
  ReplyScored(out, withscores, reply);
}

void ZscanRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  ScanCollection(ctx, args, ValueType::kZSet, true, reply);
}

// ---- ZUNION, ZINTER, ZDIFF (and their STORE forms), ZINTERCARD

enum class ZOp { kUnion, kInter, kDiff };
enum class Aggregate { kSum, kMin, kMax };

// One input: a sorted set, or a set (every member scores 1), or no key.
struct Source {
  std::map<std::string, double, std::less<>> members;
  double weight = 1;
};

struct CombineOptions {
  Aggregate aggregate = Aggregate::kSum;
  bool withscores = false;
  int64_t limit = 0;  // ZINTERCARD's (0: none)
};

// The count of keys at args[at] of ZUNION and friends: false if replied.
bool ParseNumKeys(Args args, size_t at, std::string_view name, int64_t* n, resp::Writer* reply) {
  auto v = ParseInt64(args[at]);
  if (!v) return reply->Error(kErrNotInteger), false;
  if (*v < 1) return reply->Error("ERR at least 1 input key is needed for '" + ToLower(name) + "' command"), false;
  if (static_cast<uint64_t>(*v) > args.size() - at - 1) return reply->Error(kErrSyntax), false;
  *n = *v;
  return true;
}

// The options after the keys (args from `at`), as Redis parses them after
// it has read the keys. false: replied.
bool ParseCombineOptions(Args args, size_t at, ZOp op, bool store, bool card_only, std::vector<Source>* srcs,
                         CombineOptions* o, resp::Writer* reply) {
  size_t j = at;
  while (j < args.size()) {
    const size_t remaining = args.size() - j;
    if (op != ZOp::kDiff && !card_only && remaining >= srcs->size() + 1 && EqualsIgnoreCase(args[j], "weights")) {
      ++j;
      for (auto& s : *srcs) {
        auto w = ParseDouble(args[j++]);
        if (!w) return reply->Error("ERR weight value is not a float"), false;
        s.weight = *w;
      }
    } else if (op != ZOp::kDiff && !card_only && remaining >= 2 && EqualsIgnoreCase(args[j], "aggregate")) {
      std::string_view a = args[j + 1];
      if (EqualsIgnoreCase(a, "sum")) {
        o->aggregate = Aggregate::kSum;
      } else if (EqualsIgnoreCase(a, "min")) {
        o->aggregate = Aggregate::kMin;
      } else if (EqualsIgnoreCase(a, "max")) {
        o->aggregate = Aggregate::kMax;
      } else {
        return reply->Error(kErrSyntax), false;
      }
      j += 2;
    } else if (!card_only && !store && EqualsIgnoreCase(args[j], "withscores")) {
      o->withscores = true;
      ++j;
    } else if (card_only && remaining >= 2 && EqualsIgnoreCase(args[j], "limit")) {
      auto l = ParseInt64(args[j + 1]);
      if (!l || *l < 0) return reply->Error("ERR LIMIT can't be negative"), false;
      o->limit = *l;
      j += 2;
    } else {
      return reply->Error(kErrSyntax), false;
    }
  }
  return true;
}

void AggregateInto(Aggregate a, double v, double* target) {
  switch (a) {
    case Aggregate::kSum:
      *target += v;
      if (std::isnan(*target)) *target = 0;
      break;
    case Aggregate::kMin:
      *target = std::min(*target, v);
      break;
    case Aggregate::kMax:
      *target = std::max(*target, v);
      break;
  }
}

double Weighted(const Source& s, double score) {
  double v = s.weight * score;
  return std::isnan(v) ? 0 : v;
}

// The result, sorted as a sorted set (score, then member). With `limit`
// (ZINTERCARD) only its size counts, and it may stop there.
std::vector<Scored> Combine(ZOp op, std::vector<Source> srcs, Aggregate agg, uint64_t limit = 0) {
  std::map<std::string, double, std::less<>> result;
  if (op == ZOp::kDiff) {
    result = std::move(srcs[0].members);
    for (size_t i = 1; i < srcs.size() && !result.empty(); ++i) {
      for (const auto& [m, s] : srcs[i].members) result.erase(m);
    }
  } else {
    // As Redis: smallest input first (the order sums are taken in).
    std::stable_sort(srcs.begin(), srcs.end(),
                     [](const Source& a, const Source& b) { return a.members.size() < b.members.size(); });
    if (op == ZOp::kUnion) {
      for (const auto& src : srcs) {
        for (const auto& [m, s] : src.members) {
          auto [it, added] = result.emplace(m, Weighted(src, s));
          if (!added) AggregateInto(agg, Weighted(src, s), &it->second);
        }
      }
    } else if (!srcs[0].members.empty()) {
      for (const auto& [m, s] : srcs[0].members) {
        double score = Weighted(srcs[0], s);
        bool everywhere = true;
        for (size_t i = 1; i < srcs.size() && everywhere; ++i) {
          auto it = srcs[i].members.find(m);
          everywhere = it != srcs[i].members.end();
          // As Redis: only the first input's products have NaN made 0 here.
          if (everywhere) AggregateInto(agg, srcs[i].weight * it->second, &score);
        }
        if (everywhere) result.emplace(m, score);
        if (limit > 0 && result.size() >= limit) break;
      }
    }
  }
  std::vector<Scored> out;
  out.reserve(result.size());
  for (auto& [m, s] : result) out.push_back({m, s});
  std::sort(out.begin(), out.end(), [](const Scored& a, const Scored& b) {
    return a.score < b.score || (a.score == b.score && a.member < b.member);
  });
  return out;
}

// Reads the inputs of a read (keys args[at+1 .. at+n]): false if replied.
bool ReadSources(ReadContext& ctx, Args keys, std::vector<Source>* srcs, resp::Writer* reply) {
  std::shared_ptr<storage::Snapshot> snap = ctx.engine->NewSnapshot();
  for (std::string_view key : keys) {
    CollectionRead z(ctx, ValueType::kZSet, snap);
    if (!z.Open(key, ValueType::kSet, reply)) return false;
    Source src;
    const bool is_set = z.type() == ValueType::kSet;
    bool ok = z.ForEach(
        {},
        [&](std::string_view m, std::string_view v) {
          src.members.emplace(m, is_set ? 1.0 : DecodeScore(v));
          return true;
        },
        reply);
    if (!ok) return false;
    srcs->push_back(std::move(src));
  }
  return true;
}

// ZUNION ZINTER ZDIFF: args: name numkeys key [key ...] [options]
void CombineRead(ReadContext& ctx, Args args, ZOp op, resp::Writer* reply) {
  int64_t n = 0;
  if (!ParseNumKeys(args, 1, args[0], &n, reply)) return;
  std::vector<Source> srcs;
  if (!ReadSources(ctx, args.subspan(2, static_cast<size_t>(n)), &srcs, reply)) return;
  CombineOptions o;
  if (!ParseCombineOptions(args, 2 + static_cast<size_t>(n), op, false, false, &srcs, &o, reply)) return;
  ReplyScored(Combine(op, std::move(srcs), o.aggregate), o.withscores, reply);
}
void ZunionRead(ReadContext& c, Args a, resp::Writer* r) { CombineRead(c, a, ZOp::kUnion, r); }
void ZinterRead(ReadContext& c, Args a, resp::Writer* r) { CombineRead(c, a, ZOp::kInter, r); }
void ZdiffRead(ReadContext& c, Args a, resp::Writer* r) { CombineRead(c, a, ZOp::kDiff, r); }

void ZintercardRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  int64_t n = 0;
  if (!ParseNumKeys(args, 1, args[0], &n, reply)) return;
  std::vector<Source> srcs;
  if (!ReadSources(ctx, args.subspan(2, static_cast<size_t>(n)), &srcs, reply)) return;
  CombineOptions o;
  if (!ParseCombineOptions(args, 2 + static_cast<size_t>(n), ZOp::kInter, false, true, &srcs, &o, reply)) return;
  auto result = Combine(ZOp::kInter, std::move(srcs), Aggregate::kSum, static_cast<uint64_t>(o.limit));
  reply->Integer(static_cast<int64_t>(result.size()));
}

// ---- writes

// Puts a member's two entries (its score changed from `old`, if any). A
// score of -0 is kept as 0, as Redis keeps it in a small sorted set (its
// skiplist encoding, above 128 members, keeps -0).
void PutMember(ApplyTxn& txn, uint16_t db, const std::string& key, std::string_view member, double score,
               std::optional<double> old) {
  if (old) txn.DeleteElement(db, key, ScoreName(*old, member));
  if (score == 0) score = 0;
  const std::string stored = EncodeScore(score);
  txn.PutElement(db, key, NameOf(ValueType::kZSet, member), stored);
  txn.PutElement(db, key, ScoreName(score, member), stored);
}

void DeleteMember(ApplyTxn& txn, uint16_t db, const std::string& key, std::string_view member, double score) {
  txn.DeleteElement(db, key, NameOf(ValueType::kZSet, member));
  txn.DeleteElement(db, key, ScoreName(score, member));
}

// A member's score in an apply: nullopt if absent; false: storage failed.
bool ScoreOf(ApplyTxn& txn, uint16_t db, const std::string& key, std::string_view member, std::optional<double>* out,
             Status* status) {
  auto v = txn.GetElement(db, key, NameOf(ValueType::kZSet, member));
  if (!v.ok()) {
    *status = v.status();
    return false;
  }
  *out = v->has_value() ? std::optional<double>(DecodeScore(**v)) : std::nullopt;
  return true;
}

enum ZaddFlag : uint32_t { kNx = 1, kXx = 2, kGt = 4, kLt = 8, kCh = 16, kIncr = 32 };

// ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]
// Entry args: key flags score member [score member ...]
bool ZaddPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  uint32_t flags = 0;
  size_t at = 2;
  for (; at < args.size(); ++at) {
    std::string_view o = args[at];
    if (EqualsIgnoreCase(o, "nx")) {
      flags |= kNx;
    } else if (EqualsIgnoreCase(o, "xx")) {
      flags |= kXx;
    } else if (EqualsIgnoreCase(o, "ch")) {
      flags |= kCh;
    } else if (EqualsIgnoreCase(o, "incr")) {
      flags |= kIncr;
    } else if (EqualsIgnoreCase(o, "gt")) {
      flags |= kGt;
    } else if (EqualsIgnoreCase(o, "lt")) {
      flags |= kLt;
    } else {
      break;
    }
  }
  const size_t rest = args.size() - at;
  if (rest == 0 || rest % 2 != 0) return reply->Error(kErrSyntax), false;
  if ((flags & kNx) && (flags & kXx)) {
    return reply->Error("ERR XX and NX options at the same time are not compatible"), false;
  }
  if (((flags & kGt) && (flags & kNx)) || ((flags & kLt) && (flags & kNx)) || ((flags & kGt) && (flags & kLt))) {
    return reply->Error("ERR GT, LT, and/or NX options at the same time are not compatible"), false;
  }
  if ((flags & kIncr) && rest > 2) {
    return reply->Error("ERR INCR option supports a single increment-element pair"), false;
  }
  for (size_t i = at; i < args.size(); i += 2) {
    if (!ParseDouble(args[i])) return reply->Error(kErrNotFloat), false;
  }
  SetArgs(entry, std::string(args[1]), std::to_string(flags));
  entry->args.insert(entry->args.end(), args.begin() + static_cast<std::ptrdiff_t>(at), args.end());
  return true;
}

Status ZaddApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  const uint32_t flags = static_cast<uint32_t>(std::stoul(e.args[1]));
  const bool incr = flags & kIncr;
  Status st;
  auto z = GetCollectionForWrite(txn, e.db, key, ValueType::kZSet, reply, &st);
  if (!z) return st;
  int64_t added = 0, updated = 0, processed = 0;
  double score = 0;
  if (z->found || !(flags & kXx)) {
    for (size_t i = 2; i + 1 < e.args.size(); i += 2) {
      score = *ParseDouble(e.args[i]);
      const std::string& member = e.args[i + 1];
      std::optional<double> cur;
      if (!ScoreOf(txn, e.db, key, member, &cur, &st)) return st;
      if (cur) {
        if (flags & kNx) continue;
        if (incr) {
          score += *cur;
          if (std::isnan(score)) {
            reply->Error(kErrNan);
            return Status::Ok();  // INCR has one pair: nothing was changed
          }
        }
        if (((flags & kLt) && score >= *cur) || ((flags & kGt) && score <= *cur)) continue;
        if (score != *cur) {
          PutMember(txn, e.db, key, member, score, cur);
          ++updated;
        }
        ++processed;
      } else if (!(flags & kXx)) {
        PutMember(txn, e.db, key, member, score, std::nullopt);
        ++added;
        ++processed;
      }
    }
  }
  if (added > 0) {
    z->count += static_cast<uint64_t>(added);
    st = PutCollection(txn, e.db, key, ValueType::kZSet, *z);
    if (!st.ok()) return st;
  }
  if (incr) {
    processed > 0 ? reply->Double(score) : reply->NullBulk();
  } else {
    reply->Integer((flags & kCh) ? added + updated : added);
  }
  return Status::Ok();
}

// ZINCRBY key increment member: a ZADD INCR entry.
bool ZincrbyPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  // As Redis, which parses it as ZADD key INCR ...: an option word there
  // leaves an odd count of arguments.
  for (std::string_view o : {"nx", "xx", "ch", "incr", "gt", "lt"}) {
    if (EqualsIgnoreCase(args[2], o)) return reply->Error(kErrSyntax), false;
  }
  if (!ParseDouble(args[2])) return reply->Error(kErrNotFloat), false;
  SetArgs(entry, std::string(args[1]), std::to_string(kIncr), std::string(args[2]), std::string(args[3]));
  return true;
}

Status ZremApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  Status st;
  auto z = GetCollectionForWrite(txn, e.db, key, ValueType::kZSet, reply, &st);
  if (!z) return st;
  uint64_t removed = 0;
  for (size_t i = 1; i < e.args.size() && z->found; ++i) {
    std::optional<double> cur;
    if (!ScoreOf(txn, e.db, key, e.args[i], &cur, &st)) return st;
    if (!cur) continue;
    DeleteMember(txn, e.db, key, e.args[i], *cur);
    ++removed;
  }
  if (removed > 0) {
    z->count = z->count > removed ? z->count - removed : 0;
    st = PutCollection(txn, e.db, key, ValueType::kZSet, *z);
    if (!st.ok()) return st;
  }
  reply->Integer(static_cast<int64_t>(removed));
  return Status::Ok();
}

// Removes `members` from the sorted set `z` at key (all of them: the key
// goes, its entries with it, in O(1)).
Status RemoveMembers(ApplyTxn& txn, uint16_t db, const std::string& key, CollectionAt* z,
                     const std::vector<Scored>& members) {
  if (members.empty()) return Status::Ok();
  if (members.size() >= z->count) {
    bool existed = false;
    return txn.Delete(db, key, &existed);
  }
  for (const auto& m : members) DeleteMember(txn, db, key, m.member, m.score);
  z->count -= members.size();
  return PutCollection(txn, db, key, ValueType::kZSet, *z);
}

// The sorted set at key, for a write, and the members q selects from it
// into *out. nullopt: the command is done (WRONGTYPE replied, or storage
// failed: *status).
std::optional<CollectionAt> SelectForWrite(ApplyTxn& txn, uint16_t db, const std::string& key, const RangeQuery& q,
                                           std::vector<Scored>* out, resp::Writer* reply, Status* status) {
  auto z = GetCollectionForWrite(txn, db, key, ValueType::kZSet, reply, status);
  if (!z) return std::nullopt;
  if (z->found && !Select(ApplyWalker(txn, db, key, status), z->count, q,
                          [&](std::string_view m, double s) { out->push_back({std::string(m), s}); })) {
    return std::nullopt;
  }
  return z;
}

// ZREMRANGEBYRANK/SCORE/LEX key min max: bounds checked by the proposer.
template <RangeBy kBy>
bool ZremrangePrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  RangeQuery q;
  q.by = kBy;
  if (!ParseBounds(args[2], args[3], &q, reply)) return false;
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

template <RangeBy kBy>
Status ZremrangeApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  RangeQuery q;
  q.by = kBy;
  std::string ignored;
  resp::Writer no_reply(&ignored);
  ParseBounds(e.args[1], e.args[2], &q, &no_reply);  // checked by prepare
  Status st;
  std::vector<Scored> gone;
  auto z = SelectForWrite(txn, e.db, key, q, &gone, reply, &st);
  if (!z) return st;
  st = RemoveMembers(txn, e.db, key, &*z, gone);
  if (st.ok()) reply->Integer(static_cast<int64_t>(gone.size()));
  return st;
}

// Replaces whatever `key` holds by a sorted set of `members` (none: deleted).
Status StoreZset(ApplyTxn& txn, uint16_t db, const std::string& key, const std::vector<Scored>& members) {
  bool existed = false;
  Status s = txn.Delete(db, key, &existed);
  if (!s.ok()) return s;
  for (const auto& m : members) PutMember(txn, db, key, m.member, m.score, std::nullopt);
  CollectionAt at;
  at.count = members.size();
  return PutCollection(txn, db, key, ValueType::kZSet, at);
}

// ZRANGESTORE dst src min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]
bool ZrangestorePrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  RangeQuery q;
  if (!ParseRangeQuery(args.subspan(2), false, true, &q, reply)) return false;
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

Status ZrangestoreApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  RangeQuery q;
  const std::vector<std::string_view> args(e.args.begin() + 1, e.args.end());  // src min max [options]
  std::string ignored;
  resp::Writer no_reply(&ignored);
  ParseRangeQuery(args, false, true, &q, &no_reply);  // checked by prepare
  const std::string& dst = e.args[0];
  const std::string& src = e.args[1];
  Status st;
  std::vector<Scored> got;
  if (!SelectForWrite(txn, e.db, src, q, &got, reply, &st)) return st;
  st = StoreZset(txn, e.db, dst, got);
  if (st.ok()) reply->Integer(static_cast<int64_t>(got.size()));
  return st;
}

// Reads a sorted set or a set for a write: false if answered (WRONGTYPE) or
// storage failed (*status).
bool ReadSourceForWrite(ApplyTxn& txn, uint16_t db, const std::string& key, Source* src, resp::Writer* reply,
                        Status* status) {
  auto raw = txn.GetLive(db, key);
  if (!raw.ok()) {
    *status = raw.status();
    return false;
  }
  if (!*raw) return true;
  const ValueType type = DecodeOrDie(**raw).type;
  if (type != ValueType::kZSet && type != ValueType::kSet) {
    reply->Error(kErrWrongType);
    return false;
  }
  const std::string_view tag = MemberTag(type);
  *status = txn.ForEachElement(
      db, key,
      [&](std::string_view name, std::string_view v) {
        if (!name.starts_with(tag)) return false;
        name.remove_prefix(tag.size());
        src->members.emplace(ElementOfName(name), type == ValueType::kSet ? 1.0 : DecodeScore(v));
        return true;
      },
      tag);
  return status->ok();
}

// ZUNIONSTORE ZINTERSTORE ZDIFFSTORE destination numkeys key [key ...] [options]
bool CombineStorePrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  int64_t n = 0;
  if (!ParseNumKeys(args, 2, args[0], &n, reply)) return false;
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

Status CombineStoreApply(ApplyTxn& txn, const Entry& e, ZOp op, resp::Writer* reply) {
  std::vector<std::string_view> args{std::string_view()};  // as the command: args[2] is numkeys
  args.insert(args.end(), e.args.begin(), e.args.end());
  const size_t n = static_cast<size_t>(*ParseInt64(args[2]));
  std::vector<Source> srcs(n);
  Status st;
  for (size_t i = 0; i < n; ++i) {
    if (!ReadSourceForWrite(txn, e.db, e.args[2 + i], &srcs[i], reply, &st)) return st;
  }
  CombineOptions o;
  if (!ParseCombineOptions(args, 3 + n, op, true, false, &srcs, &o, reply)) return Status::Ok();
  std::vector<Scored> result = Combine(op, std::move(srcs), o.aggregate);
  st = StoreZset(txn, e.db, e.args[0], result);
  if (st.ok()) reply->Integer(static_cast<int64_t>(result.size()));
  return st;
}
Status ZunionstoreApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) {
  return CombineStoreApply(t, e, ZOp::kUnion, r);
}
Status ZinterstoreApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) {
  return CombineStoreApply(t, e, ZOp::kInter, r);
}
Status ZdiffstoreApply(ApplyTxn& t, const Entry& e, const Limits&, resp::Writer* r) {
  return CombineStoreApply(t, e, ZOp::kDiff, r);
}

// Pops up to `count` members from the low (or high) end of the sorted set
// at key: false if answered (WRONGTYPE) or storage failed (*status).
bool PopMembers(ApplyTxn& txn, uint16_t db, const std::string& key, CollectionAt* z, bool max, uint64_t count,
                std::vector<Scored>* out, Status* status) {
  Walker w = ApplyWalker(txn, db, key, status);
  bool ok = WalkScores(w, max, {}, [&](std::string_view m, double s) {
    out->push_back({std::string(m), s});
    return out->size() < count;
  });
  if (!ok) return false;
  *status = RemoveMembers(txn, db, key, z, *out);
  return status->ok();
}

// ZPOPMIN/ZPOPMAX key [count]. Entry args: key [count]
bool ZpopPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  if (args.size() > 3) return reply->Error(kErrSyntax), false;
  if (args.size() == 3) {
    auto c = ParseInt64(args[2]);
    if (!c || *c < 0) return reply->Error(kErrPositive), false;
  }
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

template <bool kMax>
Status ZpopApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const std::string& key = e.args[0];
  const bool with_count = e.args.size() > 1;
  const uint64_t count = with_count ? static_cast<uint64_t>(*ParseInt64(e.args[1])) : 1;
  Status st;
  auto z = GetCollectionForWrite(txn, e.db, key, ValueType::kZSet, reply, &st);
  if (!z) return st;
  std::vector<Scored> got;
  if (z->found && count > 0 && !PopMembers(txn, e.db, key, &*z, kMax, count, &got, &st)) return st;
  const bool nested = reply->protocol() >= 3 && with_count;
  reply->ArrayHeader(nested ? got.size() : 2 * got.size());
  for (const auto& m : got) {
    if (nested) reply->ArrayHeader(2);
    reply->Bulk(m.member);
    reply->Double(m.score);
  }
  return Status::Ok();
}

// ZMPOP numkeys key [key ...] MIN|MAX [COUNT count]. The count of keys
// routes it, so it is checked first (as Redis). Entry args: key [key ...]
// min|max count
bool ZmpopPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  return ParseMultiPop(args, 1, "min", "max", entry, reply);
}

// BZMPOP timeout numkeys key [key ...] MIN|MAX [COUNT count]: ZMPOP's entry.
bool BzmpopPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  return ParseBlockingMultiPop(args, "min", "max", entry, reply);
}

// BZPOPMIN/BZPOPMAX key [key ...] timeout. Entry args: key [key ...] min|max
// "" (the empty count: BZPOPMIN's reply, [key, member, score]).
template <bool kMax>
bool BzpopPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  return ParseBlockingPop(args, kMax ? "max" : "min", entry, reply);
}

// Pops from the first of the keys that holds a sorted set; a null array if
// none does (a blocking pop then waits).
Status ZmpopApply(ApplyTxn& txn, const Entry& e, const Limits&, resp::Writer* reply) {
  const size_t nkeys = e.args.size() - 2;
  const bool max = e.args[nkeys] == "max";
  const bool bzpop = e.args[nkeys + 1].empty();
  const uint64_t count = bzpop ? 1 : static_cast<uint64_t>(*ParseInt64(e.args[nkeys + 1]));
  Status st;
  for (size_t i = 0; i < nkeys; ++i) {
    const std::string& key = e.args[i];
    auto z = GetCollectionForWrite(txn, e.db, key, ValueType::kZSet, reply, &st);
    if (!z) return st;
    if (!z->found) continue;
    std::vector<Scored> got;
    if (!PopMembers(txn, e.db, key, &*z, max, count, &got, &st)) return st;
    if (bzpop) {  // [key, member, score]
      reply->ArrayHeader(3);
      reply->Bulk(key);
      reply->Bulk(got[0].member);
      reply->Double(got[0].score);
      return Status::Ok();
    }
    // [key, [[member, score] ...]], in RESP2 too.
    reply->ArrayHeader(2);
    reply->Bulk(key);
    reply->ArrayHeader(got.size());
    for (const auto& m : got) {
      reply->ArrayHeader(2);
      reply->Bulk(m.member);
      reply->Double(m.score);
    }
    return Status::Ok();
  }
  reply->NullArray();
  return Status::Ok();
}

// ---- SORT, SORT_RO (here: a sorted set's score order is at hand)

struct SortArgs {
  bool desc = false, alpha = false, dontsort = false;
  int64_t limit_start = 0, limit_count = -1;
  size_t store_at = 0;  // 0: no STORE
};

// SORT's options in Redis Cluster's terms: BY with a pattern and GET read
// other keys, which a cluster refuses; BY without "*" means "do not sort".
bool ParseSort(Args args, bool readonly, SortArgs* o, resp::Writer* reply) {
  for (size_t j = 2; j < args.size(); ++j) {
    const size_t left = args.size() - j - 1;
    if (EqualsIgnoreCase(args[j], "asc")) {
      o->desc = false;
    } else if (EqualsIgnoreCase(args[j], "desc")) {
      o->desc = true;
    } else if (EqualsIgnoreCase(args[j], "alpha")) {
      o->alpha = true;
    } else if (EqualsIgnoreCase(args[j], "limit") && left >= 2) {
      auto a = ParseInt64(args[j + 1]);
      auto b = ParseInt64(args[j + 2]);
      if (!a || !b) return reply->Error(kErrNotInteger), false;
      o->limit_start = *a;
      o->limit_count = *b;
      j += 2;
    } else if (!readonly && EqualsIgnoreCase(args[j], "store") && left >= 1) {
      o->store_at = ++j;
    } else if (EqualsIgnoreCase(args[j], "by") && left >= 1) {
      if (args[++j].find('*') != std::string_view::npos) {
        return reply->Error("ERR BY option of SORT denied in Cluster mode."), false;
      }
      o->dontsort = true;
    } else if (EqualsIgnoreCase(args[j], "get") && left >= 1) {
      return reply->Error("ERR GET option of SORT denied in Cluster mode."), false;
    } else {
      return reply->Error(kErrSyntax), false;
    }
  }
  return true;
}

// The key SORT's last STORE names (COMMAND GETKEYS, routing).
std::vector<size_t> SortStoreKey(Args args) {
  std::vector<size_t> out;
  for (size_t j = 2; j < args.size(); ++j) {
    if (EqualsIgnoreCase(args[j], "limit")) {
      j += 2;
    } else if (EqualsIgnoreCase(args[j], "get") || EqualsIgnoreCase(args[j], "by")) {
      j += 1;
    } else if (EqualsIgnoreCase(args[j], "store") && j + 1 < args.size()) {
      out.assign(1, ++j);
    }
  }
  return out;
}

// The elements of the list, set or sorted set at key, sorted as SORT says,
// and cut to its LIMIT. false: answered (WRONGTYPE, storage, a number that
// is not one).
bool SortElements(ReadContext& ctx, std::string_view key, const SortArgs& o, std::vector<std::string>* out,
                  resp::Writer* reply) {
  std::string raw;
  Value v;
  bool found = false;
  if (!ReadLive(ctx, key, &raw, &v, &found, reply)) return false;
  if (found && v.type != ValueType::kList && v.type != ValueType::kSet && v.type != ValueType::kZSet) {
    return reply->Error(kErrWrongType), false;
  }
  bool dontsort = o.dontsort, alpha = o.alpha;
  if (found && v.type == ValueType::kSet && dontsort && o.store_at != 0) {
    dontsort = false;  // a stored set comes out sorted (as Redis does it)
    alpha = true;
  }
  std::vector<std::string> all;
  if (found) {
    CollectionRead c(ctx, v.type);
    if (!c.Open(key, reply)) return false;
    bool ok = true;
    if (v.type == ValueType::kZSet && dontsort) {
      ok = WalkScores(ReadWalker(c, reply), false, {}, [&](std::string_view m, double) {
        all.emplace_back(m);
        return true;
      });
    } else {
      ok = c.ForEach(
          {},
          [&](std::string_view element, std::string_view value) {
            all.emplace_back(v.type == ValueType::kList ? value : element);
            return true;
          },
          reply);
    }
    if (!ok) return false;
  }
  if (dontsort) {
    if (o.desc && v.type != ValueType::kSet) std::reverse(all.begin(), all.end());
  } else if (alpha) {
    // Byte order; without STORE as strcoll() in the C locale (to a NUL).
    const bool store = o.store_at != 0;
    std::sort(all.begin(), all.end(), [&](const std::string& a, const std::string& b) {
      const int cmp = store ? a.compare(b) : std::strcmp(a.c_str(), b.c_str());
      return o.desc ? cmp > 0 : cmp < 0;
    });
  } else {
    std::vector<std::pair<double, std::string>> scored;
    scored.reserve(all.size());
    for (auto& e : all) {
      char* end = nullptr;
      errno = 0;
      const double d = std::strtod(e.c_str(), &end);
      if (*end != '\0' || errno == ERANGE || std::isnan(d)) {
        return reply->Error("ERR One or more scores can't be converted into double"), false;
      }
      scored.emplace_back(d, std::move(e));
    }
    // Equal numbers in byte order of the elements, so the result is one.
    std::sort(scored.begin(), scored.end(), [&](const auto& a, const auto& b) {
      const int cmp = a.first < b.first ? -1 : (a.first > b.first ? 1 : a.second.compare(b.second));
      return o.desc ? cmp > 0 : cmp < 0;
    });
    all.clear();
    for (auto& [d, e] : scored) all.push_back(std::move(e));
  }
  const auto n = static_cast<int64_t>(all.size());
  const int64_t start = std::max<int64_t>(o.limit_start, 0);
  if (start >= n) return true;  // nothing from there on
  const int64_t end = o.limit_count < 0 ? n - 1 : start + std::min(o.limit_count, n - start) - 1;
  for (int64_t i = start; i <= end; ++i) out->push_back(std::move(all[static_cast<size_t>(i)]));
  return true;
}

void ReplyElements(const std::vector<std::string>& out, resp::Writer* reply) {
  reply->ArrayHeader(out.size());
  for (const auto& e : out) reply->Bulk(e);
}

// SORT_RO key [BY nosort] [LIMIT offset count] [ASC|DESC] [ALPHA]
void SortRoRead(ReadContext& ctx, Args args, resp::Writer* reply) {
  SortArgs o;
  std::vector<std::string> out;
  if (!ParseSort(args, true, &o, reply) || !SortElements(ctx, args[1], o, &out, reply)) return;
  ReplyElements(out, reply);
}

// SORT key [...] [STORE destination]: a write (STORE), applied on a view of
// the apply's own state. Entry args: the command's.
bool SortPrepare(const PrepareContext&, Args args, Entry* entry, resp::Writer* reply) {
  SortArgs o;
  if (!ParseSort(args, false, &o, reply)) return false;
  entry->args.assign(args.begin() + 1, args.end());
  return true;
}

Status SortApply(ApplyTxn& txn, const Entry& e, const Limits& limits, resp::Writer* reply) {
  std::vector<std::string_view> args = {"sort"};
  args.insert(args.end(), e.args.begin(), e.args.end());
  SortArgs o;
  if (!ParseSort(args, false, &o, reply)) return Status::Ok();
  std::vector<std::string> out;
  {
    Status failed;
    std::unique_ptr<storage::Engine> view = txn.NewReadView(&failed);
    Shard* shards[] = {txn.shard()};
    ReadContext ctx{view.get(), e.db, e.now_ms, &limits, shards, 0};
    const bool sorted = SortElements(ctx, args[1], o, &out, reply);
    // A read that failed here is no answer to store (nor to refuse with):
    // the apply fails, as any apply's failed read does. Without STORE the
    // error is only the reply (the leader's is the one sent).
    if (!failed.ok() && o.store_at != 0) return failed;
    if (!sorted) return Status::Ok();
  }
  if (o.store_at == 0) {
    ReplyElements(out, reply);
    return Status::Ok();
  }
  // The destination becomes a list of the result (no TTL), or goes if empty.
  const std::string dest(args[o.store_at]);
  const auto count = static_cast<int64_t>(out.size());
  bool existed = false;
  Status st = txn.Delete(e.db, dest, &existed);
  if (st.ok() && !out.empty()) {
    // RPUSH destination element ...
    const CommandSpec* rpush = nullptr;
    for (const CommandSpec& spec : DataCommands()) {
      if (spec.name == "rpush") rpush = &spec;
    }
    Entry push;
    push.op = rpush->op;
    push.db = e.db;
    push.now_ms = e.now_ms;
    push.args.reserve(out.size() + 1);
    push.args.push_back(dest);
    for (auto& x : out) push.args.push_back(std::move(x));
    std::string ignored;
    resp::Writer quiet(&ignored, 2);
    st = rpush->apply(txn, push, limits, &quiet);
  }
  if (st.ok()) reply->Integer(count);
  return st;
}

}  // namespace

void AppendZsetCommands(std::vector<CommandSpec>* out) {
  constexpr uint32_t kR = kCmdReadonly | kCmdFast;
  constexpr uint32_t kW = kCmdWrite | kCmdDenyOom;
  constexpr uint32_t kWF = kCmdWrite | kCmdDenyOom | kCmdFast;
  // name, arity, flags, first, last, step, group, op, read, prepare, apply, numkeys_at
  out->insert(out->end(), {
      {"zscore", 3, kR, 1, 1, 1, "sorted_set", 0, ZscoreRead},
      {"zmscore", -3, kR, 1, 1, 1, "sorted_set", 0, ZmscoreRead},
      {"zcard", 2, kR, 1, 1, 1, "sorted_set", 0, ZcardRead},
      {"zcount", 4, kR, 1, 1, 1, "sorted_set", 0, ZcountRead},
      {"zlexcount", 4, kR, 1, 1, 1, "sorted_set", 0, ZlexcountRead},
      {"zrange", -4, kCmdReadonly, 1, 1, 1, "sorted_set", 0, ZrangeRead},
      {"zrevrange", -4, kCmdReadonly, 1, 1, 1, "sorted_set", 0, ZrevrangeRead},
      {"zrangebyscore", -4, kCmdReadonly, 1, 1, 1, "sorted_set", 0, ZrangebyscoreRead},
      {"zrevrangebyscore", -4, kCmdReadonly, 1, 1, 1, "sorted_set", 0, ZrevrangebyscoreRead},
      {"zrangebylex", -4, kCmdReadonly, 1, 1, 1, "sorted_set", 0, ZrangebylexRead},
      {"zrevrangebylex", -4, kCmdReadonly, 1, 1, 1, "sorted_set", 0, ZrevrangebylexRead},
      {"zrank", 3, kR, 1, 1, 1, "sorted_set", 0, ZrankRead},
      {"zrevrank", 3, kR, 1, 1, 1, "sorted_set", 0, ZrevrankRead},
      {"zrandmember", -2, kCmdReadonly, 1, 1, 1, "sorted_set", 0, ZrandmemberRead},
      {"zscan", -3, kCmdReadonly, 1, 1, 1, "sorted_set", 0, ZscanRead},
      {"zunion", -3, kCmdReadonly, 0, 0, 0, "sorted_set", 0, ZunionRead, nullptr, nullptr, 1},
      {"zinter", -3, kCmdReadonly, 0, 0, 0, "sorted_set", 0, ZinterRead, nullptr, nullptr, 1},
      {"zdiff", -3, kCmdReadonly, 0, 0, 0, "sorted_set", 0, ZdiffRead, nullptr, nullptr, 1},
      {"zintercard", -3, kCmdReadonly, 0, 0, 0, "sorted_set", 0, ZintercardRead, nullptr, nullptr, 1},
      {"zadd", -4, kWF, 1, 1, 1, "sorted_set", 80, nullptr, ZaddPrepare, ZaddApply},
      {"zincrby", 4, kWF, 1, 1, 1, "sorted_set", 81, nullptr, ZincrbyPrepare, ZaddApply},
      {"zrem", -3, kCmdWrite | kCmdFast, 1, 1, 1, "sorted_set", 82, nullptr, nullptr, ZremApply},
      {"zremrangebyrank", 4, kCmdWrite, 1, 1, 1, "sorted_set", 83, nullptr, ZremrangePrepare<RangeBy::kRank>,
       ZremrangeApply<RangeBy::kRank>},
      {"zremrangebyscore", 4, kCmdWrite, 1, 1, 1, "sorted_set", 84, nullptr, ZremrangePrepare<RangeBy::kScore>,
       ZremrangeApply<RangeBy::kScore>},
      {"zremrangebylex", 4, kCmdWrite, 1, 1, 1, "sorted_set", 85, nullptr, ZremrangePrepare<RangeBy::kLex>,
       ZremrangeApply<RangeBy::kLex>},
      {"zpopmin", -2, kCmdWrite | kCmdFast, 1, 1, 1, "sorted_set", 86, nullptr, ZpopPrepare, ZpopApply<false>},
      {"zpopmax", -2, kCmdWrite | kCmdFast, 1, 1, 1, "sorted_set", 87, nullptr, ZpopPrepare, ZpopApply<true>},
      {"zrangestore", -5, kW, 1, 2, 1, "sorted_set", 88, nullptr, ZrangestorePrepare, ZrangestoreApply},
      {"zunionstore", -4, kW, 1, 1, 1, "sorted_set", 89, nullptr, CombineStorePrepare, ZunionstoreApply, 2},
      {"zinterstore", -4, kW, 1, 1, 1, "sorted_set", 90, nullptr, CombineStorePrepare, ZinterstoreApply, 2},
      {"zdiffstore", -4, kW, 1, 1, 1, "sorted_set", 91, nullptr, CombineStorePrepare, ZdiffstoreApply, 2},
      {"zmpop", -4, kCmdWrite, 0, 0, 0, "sorted_set", 92, nullptr, ZmpopPrepare, ZmpopApply, 1},
      {"bzpopmin", -3, kCmdWrite | kCmdFast | kCmdBlocking, 1, -2, 1, "sorted_set", 93, nullptr,
       BzpopPrepare<false>, ZmpopApply, 0, -1},
      {"bzpopmax", -3, kCmdWrite | kCmdFast | kCmdBlocking, 1, -2, 1, "sorted_set", 94, nullptr,
       BzpopPrepare<true>, ZmpopApply, 0, -1},
      {"bzmpop", -5, kCmdWrite | kCmdBlocking, 0, 0, 0, "sorted_set", 95, nullptr, BzmpopPrepare, ZmpopApply, 2,
       1},
      {"sort_ro", -2, kCmdReadonly, 1, 1, 1, "generic", 0, SortRoRead},
      {"sort", -2, kCmdWrite | kCmdDenyOom, 1, 1, 1, "generic", 108, nullptr, SortPrepare, SortApply, 0, 0,
       SortStoreKey},
  });
}

}  // namespace shoal::kv
