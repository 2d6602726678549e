#include "replica/replica.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <spdlog/spdlog.h>

#include "common/crc32c.h"
#include "common/member_id.h"
#include "kv/commands.h"
#include "kv/entry.h"
#include "resp/reply_scan.h"
#include "resp/writer.h"

namespace shoal::replica {
namespace {

// How long a proposal or read may wait before its client is told.
constexpr int64_t kWriteTimeoutUs = 8'000'000;
// ProposeJoined's entries stop growing here (a write past it goes alone).
constexpr size_t kJoinedEntryBytesMax = 1 << 20;
constexpr int64_t kReadTimeoutUs = 3'000'000;

// A committed entry that cannot be applied here: going on would let this
// replica diverge from the others silently (and ship the divergence in its
// next snapshot). Stop; at restart the entry applies again from the log.
[[noreturn]] void ApplyFailed(uint64_t group, uint64_t index, const Status& s) {
  spdlog::critical("group {}: applying the log up to {} failed: {}; stopping this node (its log is intact: "
                   "a restart applies the entries again)", group, index, s.ToString());
  spdlog::default_logger()->flush();
  FailStop("apply failed");
}

// `kind` then the group id, big endian: a per-group key in the Raft column
// family beside RaftStore's.
std::string GroupKey(char kind, uint64_t group) {
  std::string k(1, kind);
  for (int i = 7; i >= 0; --i) k.push_back(static_cast<char>(group >> (8 * i)));
  return k;
}

// 'P' group: a snapshot import under way (its position and membership).
std::string ImportMarkerKey(uint64_t group) { return GroupKey('P', group); }

std::string EncodeMarker(const raft::SnapshotMeta& meta) {
  std::string out;
  for (uint64_t v : {meta.index, meta.term}) out.append(reinterpret_cast<const char*>(&v), 8);
  out += storage::EncodeConfState(meta.conf_state);
  return out;
}

bool DecodeMarker(std::string_view raw, raft::SnapshotMeta* meta) {
  if (raw.size() < 16) return false;
  std::memcpy(&meta->index, raw.data(), 8);
  std::memcpy(&meta->term, raw.data() + 8, 8);
  return storage::DecodeConfState(raw.substr(16), &meta->conf_state);
}

constexpr std::string_view kTicketMagic("\0SHTKT1\0", 8);

// An exported image's own Raft metadata, in a file beside its data: a
// receiver can take the image without its ticket (Replica::ImageArrived).
// [magic][crc32c u32 LE of the rest][group u64 LE][unsafe recovery u64 LE]
// [marker: index, term, membership]. The group and the recovery name the
// history the image is of: a replica takes only an image of its own.
constexpr std::string_view kImageMetaFile = "raft-meta";
constexpr std::string_view kImageMetaMagic("SHIMETA2", 8);

struct ImageMeta {
  uint64_t group = 0;
  uint64_t recovery = 0;
  raft::SnapshotMeta meta;
};

Status WriteImageMeta(const std::string& dir, uint64_t group, uint64_t recovery, const std::string& marker) {
  std::string body;
  body.append(reinterpret_cast<const char*>(&group), 8);
  body.append(reinterpret_cast<const char*>(&recovery), 8);
  body += marker;
  std::string out(kImageMetaMagic);
  uint32_t crc = Crc32c(body);
  out.append(reinterpret_cast<const char*>(&crc), 4);
  out += body;
  std::ofstream f(dir + "/" + std::string(kImageMetaFile), std::ios::binary | std::ios::trunc);
  f.write(out.data(), static_cast<std::streamsize>(out.size()));
  f.close();
  return f ? Status::Ok() : Status::IOError("cannot write " + dir + "/" + std::string(kImageMetaFile));
}

// False if the image has no such file (from a node that predates it) or it
// does not check out.
bool ReadImageMeta(const std::string& dir, ImageMeta* out) {
  std::ifstream f(dir + "/" + std::string(kImageMetaFile), std::ios::binary);
  if (!f) return false;
  std::stringstream ss;
  ss << f.rdbuf();
  std::string raw = ss.str();
  if (raw.size() < kImageMetaMagic.size() + 4 + 16 || !raw.starts_with(kImageMetaMagic)) return false;
  uint32_t crc = 0;
  std::memcpy(&crc, raw.data() + kImageMetaMagic.size(), 4);
  std::string_view body = std::string_view(raw).substr(kImageMetaMagic.size() + 4);
  if (Crc32c(body) != crc) return false;
  std::memcpy(&out->group, body.data(), 8);
  std::memcpy(&out->recovery, body.data() + 8, 8);
  return DecodeMarker(body.substr(16), &out->meta);
}
constexpr char kSplitTag = 'S';
constexpr char kSplitVersion = 1;

}  // namespace

std::string SplitCommand::Encode() const {
  std::string out{kSplitTag, kSplitVersion};
  out.append(reinterpret_cast<const char*>(&child), 8);
  out.append(reinterpret_cast<const char*>(&slot), 2);
  return out;
}

bool SplitCommand::Decode(std::string_view data, SplitCommand* out) {
  if (data.size() != 12 || data[0] != kSplitTag || data[1] != kSplitVersion) return false;
  std::memcpy(&out->child, data.data() + 2, 8);
  std::memcpy(&out->slot, data.data() + 10, 2);
  return out->child != 0;
}

// 'R' group: the unsafe recovery this replica belongs to, and the log index
// up to which membership changes are void (the replica that was forced).
static std::string RecoveryKey(uint64_t group) { return GroupKey('R', group); }

static void StageRecoveryMarker(uint64_t group, uint64_t recovery, raft::Index void_upto, storage::WriteBatch& batch) {
  std::string v;
  for (uint64_t x : {recovery, void_upto}) v.append(reinterpret_cast<const char*>(&x), 8);
  batch.Put(storage::Cf::kRaft, RecoveryKey(group), v);
}

// 'I' group: the Raft member id of this node's replica of the group, its
// incarnation, and whether it was deleted (retired). Outlives the replica,
// as the term and vote do. Incarnation 0 needs none (the node id).
static std::string IncarnationKey(uint64_t group) { return GroupKey('I', group); }

static void StageIncarnation(uint64_t group, const StoredIncarnation& inc, storage::WriteBatch& batch) {
  std::string v;
  for (uint64_t x : {inc.member, inc.incarnation, uint64_t{inc.retired}}) {
    v.append(reinterpret_cast<const char*>(&x), 8);
  }
  batch.Put(storage::Cf::kRaft, IncarnationKey(group), v);
}

Result<StoredIncarnation> ReadIncarnation(storage::Engine* engine, uint64_t group) {
  std::string raw;
  Status s = engine->Get(storage::Cf::kRaft, IncarnationKey(group), &raw);
  if (s.code() == Code::kNotFound) return StoredIncarnation{};
  if (!s.ok()) return s;
  if (raw.size() != 24) return Status::Corruption("incarnation record of group " + std::to_string(group));
  StoredIncarnation inc;
  uint64_t retired = 0;
  std::memcpy(&inc.member, raw.data(), 8);
  std::memcpy(&inc.incarnation, raw.data() + 8, 8);
  std::memcpy(&retired, raw.data() + 16, 8);
  inc.retired = retired != 0;
  inc.found = true;
  return inc;
}

Status StageSplitChild(storage::Engine* engine, kv::Shard& parent, const SplitCommand& split,
                       const raft::ConfState& conf, uint64_t index, storage::WriteBatch& batch, uint64_t recovery,
                       const StoredIncarnation& member) {
  if (storage::RaftStore::HasState(engine, split.child)) {
    return Status::InvalidArgument("group " + std::to_string(split.child) + " already has state here");
  }
  // A read that failed here stops the node, as a failed apply does: the
  // split would otherwise shrink the parent and leave no child on this
  // node, and with one more member short of its child (down across the
  // split, or failing the same way) the child has no majority to elect a
  // leader and its slots no owner. At restart the split applies again (a
  // store that stays unreadable, or corrupt, keeps the node down until it
  // is repaired, as any apply's does).
  auto store = storage::RaftStore::Open(engine, split.child);
  if (!store.ok()) ApplyFailed(parent.id(), index, store.status());
  Status s = parent.StageSplit(static_cast<uint32_t>(split.child), split.slot, index, batch);
  if (!s.ok()) return s;
  (*store)->ApplySnapshot(raft::SnapshotMeta{.index = 1, .term = 1, .conf_state = conf}, batch);
  (*store)->SetHardState(raft::HardState{.term = 1, .vote = raft::kNoNode, .commit = 1}, batch);
  // The child's replica here is the same member as the parent's.
  if (member.member != raft::kNoNode) StageIncarnation(split.child, StoredIncarnation{member.member, member.incarnation}, batch);
  if (recovery > 0) {
    // Born of an unsafely recovered parent: the child's own recovery, with
    // its membership forced from the start (index 1), so that it too hears
    // only its members and fences the replicas of the lineage before it.
    StageRecoveryMarker(split.child, recovery, 1, batch);
  }
  return Status::Ok();
}

std::string SnapshotTicket::Encode() const {
  std::string out(kTicketMagic);
  for (uint64_t v : {from, export_id}) out.append(reinterpret_cast<const char*>(&v), 8);
  return out;
}

bool SnapshotTicket::Decode(std::string_view data, SnapshotTicket* out) {
  if (data.size() != kTicketMagic.size() + 16 || !data.starts_with(kTicketMagic)) return false;
  std::memcpy(&out->from, data.data() + 8, 8);
  std::memcpy(&out->export_id, data.data() + 16, 8);
  return true;
}

void KvStateMachine::Apply(const raft::Entry& e, std::string* reply) {
  std::vector<kv::Entry> entries;
  int protocol = 2;
  std::vector<kv::ApplyFn> fns;
  bool ok = DecodeKvBatch(e.data, &entries, &protocol) && !entries.empty();
  for (const auto& ke : entries) {
    fns.push_back(kv::FindApply(ke.op));
    if (fns.back() == nullptr) ok = false;
  }
  std::string scratch;
  std::string* out = reply != nullptr ? reply : &scratch;
  if (!ok) {
    // Every replica refuses the same bytes the same way: skip the entry.
    spdlog::error("shard {}: log entry {} is not a valid write batch; skipped", shard_->id(), e.index);
    out->append("-ERR internal error: malformed log entry\r\n");
    return;
  }
  resp::Writer w(out, protocol);
  auto seq = shard_->ApplyBatch(entries, fns, *limits_, &w, e.index);
  if (!seq.ok()) ApplyFailed(shard_->id(), e.index, seq.status());
}

struct KvStateMachine::Decoded {
  std::vector<kv::Entry> all;  // [0, used) decoded; past it, kept for reuse
  size_t used = 0;
  std::vector<kv::ApplyFn> fns;
  std::vector<size_t> counts;     // kv entries in each log entry
  std::vector<uint64_t> indices;  // each kv entry's log entry
  int protocol = 2;

  std::span<const kv::Entry> entries() const { return std::span<const kv::Entry>(all.data(), used); }
  // Ready for another batch, keeping up to kKeptBytes of the entries'
  // storage (a batch of large values gives it back).
  void Reset() {
    static constexpr size_t kKeptBytes = 64 << 10;
    size_t kept = 0, n = 0;
    for (; n < all.size() && kept <= kKeptBytes; ++n) {
      kept += sizeof(kv::Entry) + all[n].args.capacity() * sizeof(std::string);
      for (const std::string& a : all[n].args) kept += a.capacity();
    }
    all.resize(n);
    used = 0;
    fns.clear();
    counts.clear();
    indices.clear();
    protocol = 2;
  }
};

KvStateMachine::KvStateMachine(kv::Shard* shard, const kv::Limits* limits, const std::atomic<bool>* hints_on)
    : shard_(shard), limits_(limits), hints_on_(hints_on), hints_(shard) {}

KvStateMachine::~KvStateMachine() = default;

bool KvStateMachine::DecodeTogether(std::span<const raft::Entry* const> raft_entries, Decoded* d) const {
  d->counts.reserve(raft_entries.size());
  for (size_t i = 0; i < raft_entries.size(); ++i) {
    int p = 2;
    size_t added = 0;
    if (!AppendKvBatch(raft_entries[i]->data, &d->all, &d->used, &p, &added) || added == 0 ||
        (i > 0 && p != d->protocol)) {
      return false;
    }
    d->protocol = p;
    for (size_t k = d->used - added; k < d->used; ++k) {
      kv::ApplyFn fn = kv::FindApply(d->all[k].op);
      if (fn == nullptr || kv::MustApplyAlone(d->all[k].op)) return false;
      d->fns.push_back(fn);
      d->indices.push_back(raft_entries[i]->index);
    }
    d->counts.push_back(added);
  }
  return !raft_entries.empty();
}

namespace {
// Where the `count` replies starting at `off` of `out` end (one per kv
// entry); out.size() if they are cut short or malformed (the writer of the
// part then sees a malformed reply, and says so).
size_t RepliesEnd(std::string_view out, size_t off, size_t count) {
  for (size_t k = 0; k < count; ++k) {
    const size_t len = resp::ScanReply(out.data() + off, out.size() - off);
    if (len == resp::kReplyIncomplete || len == resp::kReplyMalformed) return out.size();
    off += len;
  }
  return off;
}
}  // namespace

void KvStateMachine::SplitReplies(const Decoded& d, std::string_view out, std::span<std::string* const> replies) {
  size_t off = 0;
  for (size_t i = 0; i < d.counts.size(); ++i) {
    const size_t start = off;
    off = RepliesEnd(out, off, d.counts[i]);
    if (replies[i] != nullptr) replies[i]->append(out.substr(start, off - start));
  }
}

void KvStateMachine::ApplyMany(std::span<const raft::Entry* const> raft_entries,
                               std::span<std::string* const> replies) {
  Decoded d;
  if (raft_entries.size() < 2 || !DecodeTogether(raft_entries, &d)) {
    // One by one: malformed entries, FLUSH*, mixed protocols.
    StateMachine::ApplyMany(raft_entries, replies);
    return;
  }
  std::string out;
  resp::Writer w(&out, d.protocol);
  auto seq = shard_->ApplyBatch(d.entries(), d.fns, *limits_, &w, raft_entries.back()->index, d.indices);
  if (!seq.ok()) ApplyFailed(shard_->id(), raft_entries.back()->index, seq.status());
  SplitReplies(d, out, replies);
}

bool KvStateMachine::StageMany(std::span<const raft::Entry* const> raft_entries,
                               std::span<std::string* const> replies, ApplyRound& round) {
  // The entries are decoded into those of this state machine's last batch,
  // whose writes (and what `written` holds of them) are behind it: the
  // round was written before a second run of a group (ApplyCommitted).
  if (staged_ == nullptr) staged_ = std::make_unique<Decoded>();
  Decoded& d = *staged_;
  d.Reset();
  if (!DecodeTogether(raft_entries, &d)) return false;
  std::string out;
  resp::Writer w(&out, d.protocol);
  std::function<void()> written;
  Status s = shard_->StageBatch(d.entries(), d.fns, *limits_, &w, raft_entries.back()->index, d.indices,
                                round.batch(), &written);
  if (!s.ok()) ApplyFailed(shard_->id(), raft_entries.back()->index, s);
  round.After(std::move(written));
  SplitReplies(d, out, replies);
  return true;
}

Status KvStateMachine::StageImport(std::string_view image, uint64_t index, storage::WriteBatch& batch,
                                   const kv::Shard::ImportMarker& marker) {
  static const std::string kEmpty(1, '\x01');  // a version-1 image with no records
  Status s = shard_->StageImage(image.empty() ? std::string_view(kEmpty) : image, index, batch, &marker);
  if (!s.ok()) return s;
  shard_->StageApplied(index, batch);
  return Status::Ok();
}

Result<std::unique_ptr<Replica>> Replica::Open(storage::Engine* engine, const ReplicaOptions& opts,
                                               std::unique_ptr<StateMachine> sm) {
  std::unique_ptr<Replica> r(new Replica(engine, opts, std::move(sm)));
  Status s = r->Init();
  if (!s.ok()) return s.WithContext("replica of group " + std::to_string(opts.group));
  return r;
}

Status Replica::Init() {
  auto store = storage::RaftStore::Open(engine_, opts_.group);
  if (!store.ok()) return store.status();
  store_ = std::move(store).value();
  auto stored = ReadIncarnation(engine_, opts_.group);
  if (!stored.ok()) return stored.status();
  if (stored->found && !stored->retired && stored->member != opts_.node_id &&
      storage::RaftStore::HasState(engine_, opts_.group)) {
    return Status::Aborted(fmt::format("group {}: this node holds member {:016x} of the group, not {:016x}",
                                       opts_.group, stored->member, opts_.node_id));
  }
  if (stored->found && stored->retired && opts_.incarnation <= stored->incarnation) {
    // Only metadata from an unsafe recovery of the meta shard (older than
    // this node's) names one: it starts empty, as a new replica does.
    spdlog::warn("group {}: opening incarnation {} here, at or below incarnation {} that was deleted here",
                 opts_.group, opts_.incarnation, stored->incarnation);
  }
  if (!stored->found ? opts_.incarnation != 0 : stored->member != opts_.node_id || stored->retired) {
    auto batch = engine_->NewBatch();
    StageIncarnation(opts_.group, StoredIncarnation{opts_.node_id, opts_.incarnation}, *batch);
    Status written = WriteSynced(*batch);
    if (!written.ok()) return written;
  }
  std::string marker;
  Status ms = engine_->Get(storage::Cf::kRaft, ImportMarkerKey(opts_.group), &marker);
  if (ms.ok()) {
    // A crash interrupted a snapshot import: finish it.
    raft::SnapshotMeta meta;
    if (!DecodeMarker(marker, &meta)) return Status::Corruption("snapshot import marker");
    // RocksDB's ingest does not sync the WAL: what this process wrote
    // before (another replica's round, when a split opens this one) first.
    auto synced = engine_->Sync();
    if (!synced.ok()) return synced.status();
    auto batch = engine_->NewBatch();
    Status s = sm_->ResumeImport(meta.index, *batch);
    if (!s.ok()) return s;
    store_->ApplySnapshot(meta, *batch);
    store_->SetHardState(store_->hard_state(), *batch);
    batch->Delete(storage::Cf::kRaft, ImportMarkerKey(opts_.group));
    Status written = WriteSynced(*batch);
    if (!written.ok()) return written;
    spdlog::info("group {}: finished the snapshot import at {} that a restart interrupted", opts_.group, meta.index);
  } else if (ms.code() != Code::kNotFound) {
    return ms;
  }
  bool fresh = store_->last_index() == 0 && store_->hard_state().empty() &&
               store_->conf_state().voters.empty() && store_->conf_state().learners.empty();
  if (fresh && !opts_.bootstrap_voters.empty()) {
    raft::ConfState cs;
    cs.voters = opts_.bootstrap_voters;
    std::sort(cs.voters.begin(), cs.voters.end());
    auto batch = engine_->NewBatch();
    Status s = sm_->StageImport(opts_.bootstrap_image, 1, *batch,
                                kv::Shard::ImportMarker{ImportMarkerKey(opts_.group), ""});
    if (!s.ok()) return s;
    store_->ApplySnapshot(raft::SnapshotMeta{.index = 1, .term = 1, .conf_state = cs}, *batch);
    store_->SetHardState(raft::HardState{.term = 1, .vote = raft::kNoNode, .commit = 1}, *batch);
    Status written = WriteSynced(*batch);
    if (!written.ok()) return written;
    sm_->FinishImport();
  }
  store_->set_snapshot_fn([this]() -> Result<raft::Snapshot> {
    // No image from before a committed split that is not applied here yet:
    // it would name the wider range, and the receiver may already hold the
    // child (created after the split). Applying a committed entry waits for
    // no one, so this passes soon (waiting for the term's first entry
    // instead could wedge a group whose quorum needs the receiver).
    if (split_index_ > sm_->applied_index() && split_index_ <= node_->raft().log().committed()) {
      return raft::unavailable_error();
    }
    // Raft asks for an image at any call, one made while this round's
    // applies are staged among them (applying a membership change sends
    // appends): the stored state would be older than the index it names.
    // Raft tries again with the next message to that follower.
    if (sm_->HasUnwritten()) {
      ++images_deferred_;
      return raft::unavailable_error();
    }
    raft::Snapshot snap;
    snap.meta.index = sm_->applied_index();
    auto term = store_->term(snap.meta.index);
    if (!term.ok()) return raft::unavailable_error();
    snap.meta.term = *term;
    snap.meta.conf_state = store_->conf_state();
    if (opts_.courier != nullptr) {
      if (ImageWriter write = sm_->BeginFileExport()) {
        // Cheap here: a storage view; the files are written off the worker.
        SnapshotTicket t{opts_.node_id, ++last_export_id_};
        snap.data = t.Encode();
        // Each export leaves in the next Ready's message; a few at most wait.
        if (exports_.size() >= 8) exports_.erase(exports_.begin());
        exports_[t.export_id] = std::move(write);
        return snap;
      }
    }
    auto data = sm_->Export();
    if (!data.ok()) return raft::unavailable_error();
    snap.data = std::move(data).value();
    return snap;
  });
  // Export ids name an export's bytes to the receiver, across restarts of
  // either side: start each incarnation somewhere new.
  last_export_id_ = (opts_.seed != 0 ? opts_.seed * 0x9E3779B97F4A7C15ULL : (uint64_t{std::random_device{}()} << 32 | std::random_device{}())) & ~0xFFFFFULL;
  Status loaded = LoadRecovery();
  if (!loaded.ok()) return loaded;
  // Split entries in the log not applied yet (see split_index_).
  if (store_->last_index() > sm_->applied_index()) {
    raft::Index from = std::max<raft::Index>(sm_->applied_index() + 1, store_->first_index());
    auto ents = store_->entries(from, store_->last_index() + 1, raft::kNoLimit);
    if (ents.ok()) {
      for (const auto& e : *ents) {
        SplitCommand split;
        if (e.type == raft::EntryType::kNormal && SplitCommand::Decode(e.data, &split)) split_index_ = e.index;
      }
    }
  }
  Status started = StartNode();
  if (!started.ok()) return started;
  return Status::Ok();
}

Status Replica::WriteSynced(storage::WriteBatch& batch) {
  auto seq = engine_->Write(batch);
  if (!seq.ok()) return seq.status();
  auto synced = engine_->Sync();
  return synced.ok() ? Status::Ok() : synced.status();
}

void Replica::WriteRecovery(uint64_t recovery, raft::Index void_upto, storage::WriteBatch& batch) {
  StageRecoveryMarker(opts_.group, recovery, void_upto, batch);
}

Status Replica::LoadRecovery() {
  std::string raw;
  Status g = engine_->Get(storage::Cf::kRaft, RecoveryKey(opts_.group), &raw);
  if (g.code() == Code::kNotFound) return Status::Ok();
  if (!g.ok()) return g;
  if (raw.size() != 16) return Status::Corruption("recovery marker of group " + std::to_string(opts_.group));
  std::memcpy(&recovery_, raw.data(), 8);
  recovery_pub_.store(recovery_, std::memory_order_release);
  std::memcpy(&void_conf_upto_, raw.data() + 8, 8);
  return Status::Ok();
}

Status Replica::SetRecovery(uint64_t recovery) {
  if (recovery <= recovery_) return Status::Ok();
  auto batch = engine_->NewBatch();
  WriteRecovery(recovery, void_conf_upto_, *batch);
  Status written = WriteSynced(*batch);
  if (!written.ok()) return written;
  recovery_ = recovery;
  recovery_pub_.store(recovery, std::memory_order_release);
  return Status::Ok();
}

Result<bool> Replica::ForceSoleVoter(uint64_t recovery, std::string* refused_why, bool learner_ok) {
  if (retired_ || ready_ || recovery_ >= recovery) return false;  // done, or between Ready rounds later
  // Only a voter with state, in a group that has had no leader for a while:
  // never a replica that is new, a learner, or part of a working group.
  const raft::ConfState& now = store_->conf_state();
  bool voter = std::count(now.voters.begin(), now.voters.end(), opts_.node_id) +
                   std::count(now.voters_outgoing.begin(), now.voters_outgoing.end(), opts_.node_id) > 0;
  // A replica started over for a recovery whose state machine kept its
  // state (the metadata): when that recovery's leader is lost before it
  // passed its state on, the kept state is what is left.
  const bool kept = recovery_ > 0 && store_->last_index() == 0 && now.voters.empty() && now.learners.empty() &&
                    sm_->applied_index() > 0;
  const bool learner = learner_ok && std::count(now.learners.begin(), now.learners.end(), opts_.node_id) > 0;
  const char* refused = !voter && !kept && !learner      ? "it is not a voter of the group"
                        : store_->last_index() == 0 && !kept ? "it holds no state"
                        : is_leader()                    ? "it leads the group"
                        : HeardFromLeaderWithin(kForceQuietTicks) ? "the group had a leader within the last 60 ticks"
                                                         : nullptr;
  if (refused != nullptr) {
    if (refused_why != nullptr) *refused_why = refused;
    if (force_refused_ != recovery) {
      spdlog::error("group {}: unsafe recovery {} refused here: {}", opts_.group, recovery, refused);
      force_refused_ = recovery;
    }
    return false;
  }
  raft::ConfState before = store_->conf_state();
  raft::ConfState cs;
  cs.voters = {opts_.node_id};
  auto batch = engine_->NewBatch();
  if (kept) {
    // Its log starts over at the kept state, as a snapshot of it.
    const raft::Index at = sm_->applied_index();
    const raft::Term term = std::max<raft::Term>(store_->hard_state().term, 1);
    store_->ApplySnapshot(raft::SnapshotMeta{.index = at, .term = term, .conf_state = cs}, *batch);
    store_->SetHardState(raft::HardState{.term = term, .vote = store_->hard_state().vote, .commit = at}, *batch);
  }
  store_->SetConfState(cs, *batch);
  // Membership changes still in the log (up to its end) are void from now on.
  raft::Index void_upto = store_->last_index();
  WriteRecovery(recovery, void_upto, *batch);
  Status written = WriteSynced(*batch);
  if (!written.ok()) {
    // The store's memory already has the new membership: stop rather than run on.
    spdlog::critical("group {}: unsafe recovery {} could not be written: {}", opts_.group, recovery,
                     written.ToString());
    FailStop("unsafe recovery write failed");
  }
  recovery_ = recovery;
  recovery_pub_.store(recovery, std::memory_order_release);
  void_conf_upto_ = void_upto;
  term_start_index_ = UINT64_MAX;  // no lease until this term's first entry applies
  spdlog::critical(
      "group {}: UNSAFE RECOVERY {}: this replica (applied {}, log up to {}) is now the group's only voter; "
      "it had voters {} learners {}; writes only the lost voters held are gone",
      opts_.group, recovery, sm_->applied_index(), store_->last_index(), before.voters.size(),
      before.learners.size());
  Status s = Restart();  // the new Raft reads the sole-voter membership
  if (!s.ok()) return s;
  return true;
}

Result<bool> Replica::ResetForRecovery(uint64_t recovery) {
  if (retired_ || ready_ || recovery_ >= recovery) return false;
  const raft::Index applied = sm_->applied_index(), last = store_->last_index();
  auto batch = engine_->NewBatch();
  Status d = sm_->StageDestroy(*batch);
  if (!d.ok()) return d;
  store_->StageDestroy(*batch);  // the term and vote stay
  batch->Delete(storage::Cf::kRaft, ImportMarkerKey(opts_.group));
  WriteRecovery(recovery, 0, *batch);
  Status written = WriteSynced(*batch);
  if (!written.ok()) {
    // The store's memory is already empty: stop rather than run on.
    spdlog::critical("group {}: starting the replica over for unsafe recovery {} could not be written: {}",
                     opts_.group, recovery, written.ToString());
    FailStop("unsafe recovery reset write failed");
  }
  recovery_ = recovery;
  recovery_pub_.store(recovery, std::memory_order_release);
  void_conf_upto_ = 0;
  split_index_ = 0;
  import_gen_.fetch_add(2, std::memory_order_acq_rel);  // reads that began before see the change
  spdlog::critical("group {}: this replica (applied {}, log up to {}) is from before unsafe recovery {} of its group "
                   "elsewhere: deleted; it waits to be sent the recovered group's state",
                   opts_.group, applied, last, recovery);
  Status s = Restart();
  if (!s.ok()) return s;
  return true;
}

Status Replica::Restart() {
  FailWaiters("-TIMEOUT the shard was recovered; the write's outcome is unknown\r\n");
  exports_.clear();
  snapshot_holds_.clear();
  if (opts_.courier != nullptr && sending_images_) opts_.courier->Recall(opts_.group, {});
  sending_images_ = false;
  leader_.store(raft::kNoNode, std::memory_order_release);
  lease_until_us_.store(0, std::memory_order_release);
  return StartNode();
}

Status Replica::StartNode() {
  raft::Config cfg;
  cfg.id = opts_.node_id;
  cfg.election_tick = opts_.election_tick;
  cfg.heartbeat_tick = opts_.heartbeat_tick;
  cfg.applied = std::min<uint64_t>(sm_->applied_index(), store_->hard_state().commit);
  if (cfg.applied < store_->first_index() - 1) cfg.applied = 0;
  // ReadIndex always confirms with a heartbeat round: the leader's lease is
  // judged here, on a monotonic clock (Publish), never from ticks alone.
  cfg.read_only_option = raft::ReadOnlyOption::kSafe;
  cfg.check_quorum = true;
  cfg.pre_vote = true;
  cfg.max_size_per_msg = 1 << 20;
  cfg.max_inflight_msgs = 256;
  // Data groups: followers learn a new commit index with the next append or
  // heartbeat, not from a message of its own (half the messages per write).
  // The meta group tells at once: every node routes by what its meta
  // replica has applied.
  cfg.skip_bcast_commit = opts_.group != 0;
  cfg.commit_lone_appends = opts_.commit_lone_appends;
  cfg.seed = (opts_.seed != 0 ? opts_.seed : std::random_device{}()) ^ (opts_.group * 0x9E3779B97F4A7C15ULL) ^
             opts_.node_id;
  auto node = raft::RawNode::create(cfg, store_.get());
  if (!node.ok()) return node.status();
  node_ = std::move(node).value();
  tick_times_.clear();  // a new Raft counts its ticks from 1 again
  raft::SplitMix64 nonce(cfg.seed ^ 0xD1B54A32D192ED03ULL ^ (opts_.seed != 0 ? 0 : std::random_device{}()));
  read_prefix_ = fmt::format("{:016x}{:016x}:", opts_.node_id, nonce.next());
  applied_.store(sm_->applied_index());
  const auto& cs = store_->conf_state();
  if (cs.voters.size() == 1 && cs.voters[0] == opts_.node_id && cs.voters_outgoing.empty()) {
    node_->campaign();  // a group of one elects itself at once
  }
  return Status::Ok();
}

void Replica::Tick(int64_t now_mono_us) {
  if (retired_) return;
  ++ticks_;
  if (leader_contact_us_ == INT64_MIN) leader_contact_us_ = now_mono_us;
  node_->tick();
  if (campaign_at_tick_ != 0 && ticks_ >= campaign_at_tick_) {
    campaign_at_tick_ = 0;
    // Unless an election moved on meanwhile: someone was elected, this
    // replica campaigned, or it voted in a newer term (its winner's first
    // entry may simply not have arrived yet: standing now would depose it).
    if (node_->raft().role() == raft::Role::kFollower && node_->raft().lead() == raft::kNoNode &&
        node_->raft().term() == campaign_term_) {
      campaigns_gone_.fetch_add(1, std::memory_order_relaxed);
      node_->campaign();
    }
  }
  if (arrived_) TakeArrivedImage();
  const raft::Raft& raft = node_->raft();
  campaigns_.store(raft.campaigns(), std::memory_order_relaxed);
  tick_times_.emplace_back(raft.tick_count(), now_mono_us);
  while (tick_times_.size() > static_cast<size_t>(4 * opts_.election_tick + 4)) tick_times_.pop_front();
  if (raft.commits_refused() > seen_commits_refused_ || raft.credits_forgotten() > seen_credits_forgotten_) {
    // Expected once after a replica comes back to a node under the same
    // id (or a reordered answer); anything else means a lost log.
    spdlog::warn("group {}: a log shorter than its leader believed ({} commits refused here, {} followers' "
                 "credits forgotten): a replica created anew under an old id, or a lost log",
                 opts_.group, raft.commits_refused() - std::min(seen_commits_refused_, raft.commits_refused()),
                 raft.credits_forgotten() - std::min(seen_credits_forgotten_, raft.credits_forgotten()));
  }
  seen_commits_refused_ = raft.commits_refused();  // the counters restart with the Raft node
  seen_credits_forgotten_ = raft.credits_forgotten();
  Publish(now_mono_us);
  ExpireWaiters(now_mono_us);
}

bool Replica::PeerGone(raft::NodeId node, int64_t now_mono_us) {
  // `node` is a node id; the leader is a member id on that node, if any.
  const raft::NodeId lead = node_->raft().lead();
  if (retired_ || lead == raft::kNoNode || !SameNode(lead, node) || !node_->leader_gone(lead)) return false;
  // Votes are no longer refused for the leader's sake (Step).
  leader_contact_us_ = std::min(leader_contact_us_,
                                now_mono_us - int64_t{opts_.election_tick} * opts_.tick_ms * 1000 - 1);
  const raft::ConfState& cs = node_->raft().tracker().conf_state();
  std::vector<raft::NodeId> voters = cs.voters;
  voters.insert(voters.end(), cs.voters_outgoing.begin(), cs.voters_outgoing.end());
  std::sort(voters.begin(), voters.end());
  voters.erase(std::unique(voters.begin(), voters.end()), voters.end());
  if (std::find(voters.begin(), voters.end(), opts_.node_id) == voters.end()) return true;  // a learner
  uint64_t rank = 0;
  for (raft::NodeId v : voters) {
    if (v == opts_.node_id) break;
    if (!SameNode(v, node)) ++rank;
  }
  // The first ranked stands at once; each next one three ticks later, only
  // if no leader has been heard of by then (an election takes a round trip
  // and a synced vote).
  spdlog::info("group {}: leader {:016x} is gone (its process ended); standing for election in {} ticks",
               opts_.group, node, 3 * rank);
  if (rank == 0) {
    campaigns_gone_.fetch_add(1, std::memory_order_relaxed);
    node_->campaign();
    campaigns_.store(node_->raft().campaigns(), std::memory_order_relaxed);
  } else {
    campaign_at_tick_ = ticks_ + 3 * rank;
    campaign_term_ = node_->raft().term();
  }
  return true;
}

void Replica::Step(raft::Message m, int64_t now_mono_us) {
  if (m.to != opts_.node_id || retired_) return;
  if (leader_contact_us_ == INT64_MIN) leader_contact_us_ = now_mono_us;
  if (void_conf_upto_ > 0) {
    // An unsafely recovered replica hears only members of its membership:
    // a lost voter that comes back must not take over again.
    const raft::ConfState& cs = node_->raft().tracker().conf_state();
    auto in = [&](const std::vector<raft::NodeId>& v) { return std::find(v.begin(), v.end(), m.from) != v.end(); };
    if (!in(cs.voters) && !in(cs.voters_outgoing) && !in(cs.learners)) return;
  }
  // A replica with no membership yet (new here, or created again after it
  // left) holds no log: it must not help elect anyone. A voter is always
  // promoted from a caught-up learner, so no election needs its vote.
  if ((m.type == raft::MessageType::kVote || m.type == raft::MessageType::kPreVote) &&
      node_->raft().tracker().conf_state().voters.empty()) {
    return;
  }
  // The leader's lease (Publish) counts on every follower refusing votes for
  // an election timeout of real time after hearing from it. Raft refuses
  // for election_tick ticks, but ticks come in a burst after a stall; this
  // holds whatever the ticks do. A transfer's campaign is let through (the
  // leader ended its lease before sending TimeoutNow).
  if ((m.type == raft::MessageType::kVote || m.type == raft::MessageType::kPreVote) &&
      m.context != raft::kTransferContext &&
      now_mono_us - leader_contact_us_ < int64_t{opts_.election_tick} * opts_.tick_ms * 1000) {
    return;
  }
  if (m.type == raft::MessageType::kSnap) {
    SnapshotTicket t;
    std::string dir;
    bool ticket = SnapshotTicket::Decode(m.snapshot.data, &t);
    const raft::Raft& raft = node_->raft();
    if (ticket && (m.term < raft.term() || m.snapshot.meta.index <= raft.log().committed())) {
      // Raft drops it (an older term) or answers with its commit index (this
      // replica is past it: it may have taken the image when it arrived).
      // An image it no longer needs is thrown away.
      if (m.snapshot.meta.index <= raft.log().committed() && opts_.courier != nullptr && !ImageInUse(t) &&
          !opts_.courier->Received(opts_.group, t).empty()) {
        opts_.courier->Consumed(opts_.group, t);
      }
    } else if (ticket && (opts_.courier == nullptr || (dir = opts_.courier->Received(opts_.group, t)).empty())) {
      // Its image has not (all) arrived: the leader sends it again.
      spdlog::warn("group {}: snapshot at {} from member {:016x} without its image; dropped", opts_.group,
                   m.snapshot.meta.index, m.from);
      return;
    } else if (ticket) {
      if (raft.tracker().conf_state().voters.empty() && raft.tracker().conf_state().learners.empty() &&
          (raft.lead() != m.from || raft.term() != m.term)) {
        // A replica new here takes a snapshot only from the leader it has
        // heard from in this term (which probes it before sending one): a
        // former leader's ticket may be for an earlier replica under the
        // same id (docs/design/placement.md, "Rejoining").
        spdlog::warn("group {}: snapshot at {} from member {:016x}, not this new replica's leader in term {}; dropped",
                     opts_.group, m.snapshot.meta.index, m.from, m.term);
        return;
      }
      if (!AdmitImage(t, dir, m.snapshot.meta.index, m.from)) return;
    } else {
      if (std::optional<uint64_t> from = sm_->ImageRecovery(m.snapshot.data); from && *from < recovery_) {
        // From a leader of the group as it was before an unsafe recovery this
        // replica was started over for: never taken.
        spdlog::warn("group {}: snapshot at {} from member {:016x} predates unsafe recovery {}; dropped", opts_.group,
                     m.snapshot.meta.index, m.from, recovery_);
        return;
      }
      uint16_t b = 0, e = 0;
      if (opts_.splitter != nullptr && sm_->ImageRange(m.snapshot.data, "", &b, &e) &&
          !opts_.splitter->ClaimImage(*this, b, e)) {
        spdlog::warn("group {}: snapshot at {} names slots {}-{}, some held by another replica here; dropped",
                     opts_.group, m.snapshot.meta.index, b, e - 1);
        return;
      }
    }
  }
  if ((m.type == raft::MessageType::kApp || m.type == raft::MessageType::kHeartbeat ||
       m.type == raft::MessageType::kSnap) &&
      m.term >= node_->raft().term()) {
    leader_contact_tick_ = ticks_;
    leader_contacted_ = true;
    leader_contact_us_ = std::max(leader_contact_us_, now_mono_us);
  }
  const bool snap = m.type == raft::MessageType::kSnap;
  if (snap && opts_.splitter != nullptr) image_claimed_ = true;
  (void)node_->step(std::move(m));
  if (snap) MaybeReleaseImage();  // Raft did not take it
}

bool Replica::AdmitImage(const SnapshotTicket& t, const std::string& dir, raft::Index index, raft::NodeId from) {
  // Checked before Raft takes the snapshot: once taken, an image that
  // cannot be imported stops the node. A corrupt one is thrown away and
  // the leader sends another. Its folder is marked as used now, so that
  // the courier's clean-up of old images (hours of silence) spares it
  // until it is imported.
  std::error_code ec;
  std::filesystem::last_write_time(dir, std::filesystem::file_time_type::clock::now(), ec);
  Status intact = opts_.courier->ChecksImages() ? Status::Ok() : sm_->CheckImageFiles(dir);
  if (!intact.ok()) {
    spdlog::error("group {}: snapshot at {} from member {:016x} is corrupt ({}); dropped", opts_.group, index, from,
                  intact.ToString());
    opts_.courier->Consumed(opts_.group, t);
    return false;
  }
  uint16_t b = 0, e = 0;
  if (opts_.splitter != nullptr && sm_->ImageRange(std::string_view(), dir, &b, &e) &&
      !opts_.splitter->ClaimImage(*this, b, e)) {
    // From before a split whose child is already here: the leader sends
    // a later one (narrower) once it has applied the split.
    spdlog::warn("group {}: snapshot at {} names slots {}-{}, some held by another replica here; dropped",
                 opts_.group, index, b, e - 1);
    opts_.courier->Consumed(opts_.group, t);
    return false;
  }
  return true;
}

bool Replica::ImageInUse(const SnapshotTicket& t) const {
  const auto& pending = node_->raft().log().unstable_snapshot();
  return pending && pending->data == t.Encode();
}

void Replica::ImageArrived(const SnapshotTicket& ticket) {
  // A repeated "done" for an image already taken or thrown away does not
  // replace one still waiting.
  if (retired_ || opts_.courier == nullptr || opts_.courier->Received(opts_.group, ticket).empty()) return;
  arrived_ = ticket;
  TakeArrivedImage();
}

void Replica::TakeArrivedImage() {
  if (!arrived_ || retired_) return;
  const SnapshotTicket t = *arrived_;
  const std::string dir = opts_.courier->Received(opts_.group, t);
  ImageMeta im;
  // Gone (taken with its ticket, or thrown away), or from a node that does
  // not write its metadata beside it: only its ticket can bring it in.
  if (dir.empty() || ImageInUse(t) || !ReadImageMeta(dir, &im)) {
    arrived_.reset();
    return;
  }
  const raft::SnapshotMeta& meta = im.meta;
  const raft::Raft& raft = node_->raft();
  if (meta.index <= raft.log().committed()) {
    arrived_.reset();
    opts_.courier->Consumed(opts_.group, t);  // no longer needed
    return;
  }
  // Of another group, or of this group before or after an unsafe recovery
  // that this replica is not of (a replica not yet started over for a
  // recovery, or one of a later recovery than its sender's): never taken.
  if (im.group != opts_.group || im.recovery != recovery_) {
    spdlog::warn("group {}: snapshot at {} from member {:016x} is of group {} in unsafe recovery {}, this replica's "
                 "is {}; not taken",
                 opts_.group, meta.index, t.from, im.group, im.recovery, recovery_);
    arrived_.reset();
    return;
  }
  if (raft.role() == raft::Role::kLeader) {
    arrived_.reset();  // a leader needs no image
    return;
  }
  if (raft.role() != raft::Role::kFollower) return;  // campaigning: next tick
  // The image was made for this replica: it lists it. A replica with no
  // membership yet (new here) takes only an image that lists it as a
  // learner, as every replica is added: one made for an earlier replica
  // under the same id, as a voter, would let this one vote with a log it
  // never had.
  const raft::ConfState& cs = meta.conf_state;
  auto in = [&](const std::vector<raft::NodeId>& v) { return std::find(v.begin(), v.end(), opts_.node_id) != v.end(); };
  const bool fresh = raft.tracker().conf_state().voters.empty() && raft.tracker().conf_state().learners.empty();
  if (fresh ? !in(cs.learners) : !(in(cs.voters) || in(cs.voters_outgoing) || in(cs.learners))) {
    arrived_.reset();
    return;
  }
  arrived_.reset();
  if (!AdmitImage(t, dir, meta.index, t.from)) return;
  if (opts_.splitter != nullptr) image_claimed_ = true;
  if (node_->install_snapshot(raft::Snapshot{meta, t.Encode()})) {
    images_taken_.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("group {}: took the snapshot at {} from member {:016x} as its image arrived{}", opts_.group, meta.index,
                 t.from, t.from == raft.lead() ? "" : " (its sender is not the leader now)");
  } else if (!ImageInUse(t)) {
    opts_.courier->Consumed(opts_.group, t);  // its log has that entry already: only the commit index moved
  }
  MaybeReleaseImage();
}

void Replica::MaybeReleaseImage(raft::Index imported) {
  // Held while Raft has a snapshot pending that is not imported yet. Once
  // imported, the shard's range is the image's, and that range holds the
  // slots from then on.
  const auto& pending = node_->raft().log().unstable_snapshot();
  if (!image_claimed_ || (!retired_ && pending && pending->meta.index != imported)) return;
  image_claimed_ = false;
  opts_.splitter->ReleaseImage(*this);
}

raft::Proposal Replica::Propose(std::string data, ReplyFn done, int64_t now_mono_us) {
  if (retired_) return raft::Proposal{raft::ProposeError::kRemoved, raft::kNoNode, 0, 0};
  const raft::Raft& r = node_->raft();
  // Annotations (write hints) are for followers: a group of one has none.
  // A member added later that is sent the un-annotated entries reads their
  // keys itself, and hints start over once all of them are applied
  // (WriteHints::Annotate).
  const bool alone = r.tracker().is_singleton() && r.tracker().progress().size() == 1;  // no learner either
  const bool annotated = r.role() == raft::Role::kLeader && !alone;
  const uint64_t index = r.log().last_index() + 1;
  if (annotated) {
    data = sm_->Annotate(std::move(data), r.term(), index);
  } else if (r.role() == raft::Role::kLeader) {
    sm_->NotAnnotated();
  }
  raft::Proposal p = node_->propose(std::move(data));
  if (annotated) {
    SHOAL_CHECK(!p.ok() || p.index == index);
    sm_->Appended(index, p.ok());
  }
  if (p.ok()) {
    PendingWrite w{p.term, std::move(done), now_mono_us + kWriteTimeoutUs};
    auto it = writes_.find(p.index);
    if (it == writes_.end()) {
      writes_.emplace(p.index, std::move(w));
    } else {
      // A write proposed at this index in an earlier term, whose entry this
      // log has since replaced with another leader's (Raft truncated it: it
      // was never committed), and not answered yet: it is told so now.
      PendingWrite dropped = std::exchange(it->second, std::move(w));
      dropped.done(false, "-TRYAGAIN the write was dropped by a leader change; retry\r\n");
    }
  }
  return p;
}

void Replica::ProposeJoined(std::string batch, JoinedFn done, int64_t now_mono_us) {
  const raft::Raft& r = node_->raft();
  if (retired_ || r.role() != raft::Role::kLeader) {
    done(raft::Proposal{retired_ ? raft::ProposeError::kRemoved : raft::ProposeError::kNotLeader, r.lead(), 0, 0},
         false, {});
    return;
  }
  uint32_t count = 0;
  char protocol = 0;
  const bool joinable = JoinableKvBatch(batch, &count, &protocol) && batch.size() <= kJoinedEntryBytesMax;
  joined_.push_back(JoinedWrite{std::move(batch), std::move(done), now_mono_us, count, !joinable});
}

void Replica::RefuseQueued(raft::ProposeError why) {
  auto queued = std::move(joined_);
  joined_.clear();
  const raft::NodeId hint = retired_ ? raft::kNoNode : node_->raft().lead();
  for (JoinedWrite& w : queued) w.done(raft::Proposal{why, hint, 0, 0}, false, {});
}

void Replica::ProposeQueued() {
  if (joined_.empty()) return;
  auto queued = std::move(joined_);
  joined_.clear();  // what a callback queues from here on waits for the next round
  for (size_t i = 0; i < queued.size();) {
    // A run of joinable writes of one protocol, within the entry's bytes.
    size_t j = i + 1;
    if (!queued[i].alone) {
      size_t bytes = queued[i].batch.size();
      while (j < queued.size() && !queued[j].alone && queued[j].batch[1] == queued[i].batch[1] &&
             bytes + queued[j].batch.size() - 6 <= kJoinedEntryBytesMax) {
        bytes += queued[j].batch.size() - 6;
        ++j;
      }
    }
    const std::span<JoinedWrite> run(queued.data() + i, j - i);
    const int64_t queued_us = run.front().queued_us;  // the oldest: its deadline counts
    i = j;
    if (run.size() == 1) {
      JoinedFn done = std::move(run.front().done);
      raft::Proposal p = Propose(std::move(run.front().batch), [done](bool applied, std::string reply) {
        done(raft::Proposal{}, applied, std::move(reply));
      }, queued_us);
      if (!p.ok()) done(p, false, {});
      continue;
    }
    std::vector<std::string_view> batches;
    batches.reserve(run.size());
    for (const JoinedWrite& w : run) batches.push_back(w.batch);
    std::string joined = JoinKvBatches(batches);
    // Each write's replies: its kv entries' replies, in order, from the
    // entry's (one per kv entry).
    auto parts = std::make_shared<std::vector<std::pair<uint32_t, JoinedFn>>>();
    parts->reserve(run.size());
    for (JoinedWrite& w : run) parts->emplace_back(w.count, std::move(w.done));
    raft::Proposal p = Propose(std::move(joined), [parts](bool applied, std::string reply) {
      size_t off = 0;
      for (auto& [count, done] : *parts) {
        if (!applied) {
          done(raft::Proposal{}, false, reply);
          continue;
        }
        const size_t start = off;
        off = RepliesEnd(reply, off, count);
        done(raft::Proposal{}, true, reply.substr(start, off - start));
      }
    }, queued_us);
    if (!p.ok()) {
      for (auto& [count, done] : *parts) done(p, false, {});
    }
  }
}

void Replica::ReadIndex(ReadFn done, int64_t now_mono_us) {
  if (retired_) return done(false);
  const raft::Raft& r = node_->raft();
  // No leader to ask (an election under way): Raft would drop the request.
  if (r.role() != raft::Role::kLeader && r.lead() == raft::kNoNode) return done(false);
  std::string ctx = read_prefix_ + std::to_string(++next_read_);
  if (r.role() == raft::Role::kLeader && LeaseHolds(now_mono_us)) {
    // Within the lease no other leader can have committed anything: what is
    // committed here now is all there is. It is served once applied.
    reads_[ctx] = PendingRead{std::move(done), now_mono_us + kReadTimeoutUs, std::max<uint64_t>(r.log().committed(), 1)};
    ServeReads();
    return;
  }
  reads_[ctx] = PendingRead{std::move(done), now_mono_us + kReadTimeoutUs};
  node_->read_index(ctx);
}

Status Replica::StageDestroy(storage::WriteBatch& batch) {
  Status s = sm_->StageDestroy(batch);
  if (!s.ok()) return s;
  store_->StageDestroy(batch);
  batch.Delete(storage::Cf::kRaft, ImportMarkerKey(opts_.group));
  // This member never comes back here: the next replica of the group on
  // this node is a later incarnation.
  StageIncarnation(opts_.group, StoredIncarnation{opts_.node_id, opts_.incarnation, true}, batch);
  // The recovery number outlives the replica (a new one here must not force
  // again); what was void in this one's log does not.
  if (recovery_ > 0) WriteRecovery(recovery_, 0, batch);
  // Its images on their way elsewhere stop: a replica that comes here later
  // must not take up (Carrying) what this one shipped.
  if (opts_.courier != nullptr && sending_images_) opts_.courier->Recall(opts_.group, {});
  sending_images_ = false;
  retired_ = true;
  MaybeReleaseImage();
  // Odd for good: a read that began before (it holds this replica) must not
  // be answered from the range being deleted.
  import_gen_.store((import_gen_.load(std::memory_order_relaxed) | 1) + 2, std::memory_order_release);
  leader_.store(raft::kNoNode, std::memory_order_release);
  lease_until_us_.store(0, std::memory_order_release);
  FailWaiters("-TIMEOUT the shard's replica left this node; the write's outcome is unknown\r\n");
  RefuseQueued(raft::ProposeError::kRemoved);
  return Status::Ok();
}

void Replica::FailWaiters(const std::string& reply) {
  auto writes = std::move(writes_);
  writes_.clear();
  for (auto& [index, w] : writes) w.done(false, reply);
  auto reads = std::move(reads_);
  reads_.clear();
  for (auto& [key, r] : reads) r.done(false);
}

void Replica::ExpireWaiters(int64_t now_mono_us) {
  // Queued writes wait for the next round (BeginReady); while the worker's
  // rounds are held up (a stalled disk), they are answered here: refused
  // once this replica no longer leads (in no log: the connection retries
  // where the shard is led now), and after the write timeout told so.
  if (!joined_.empty() && node_->raft().role() != raft::Role::kLeader) {
    RefuseQueued(raft::ProposeError::kNotLeader);
  }
  if (!joined_.empty() && joined_.front().queued_us + kWriteTimeoutUs <= now_mono_us) {
    auto queued = std::move(joined_);
    joined_.clear();
    for (JoinedWrite& w : queued) {
      if (w.queued_us + kWriteTimeoutUs > now_mono_us) {
        joined_.push_back(std::move(w));
        continue;
      }
      w.done(raft::Proposal{}, false,
             "-TRYAGAIN the write waited too long for its shard's next round and was never logged; retry\r\n");
    }
  }
  for (auto it = writes_.begin(); it != writes_.end();) {
    if (it->second.deadline_us > now_mono_us) {
      ++it;
      continue;
    }
    auto done = std::move(it->second.done);
    it = writes_.erase(it);
    done(false, "-TIMEOUT the write was not confirmed in time (leader change or lost quorum); its outcome is unknown\r\n");
  }
  for (auto it = reads_.begin(); it != reads_.end();) {
    if (it->second.deadline_us > now_mono_us) {
      ++it;
      continue;
    }
    auto done = std::move(it->second.done);
    it = reads_.erase(it);
    done(false);
  }
}

bool Replica::BeginReady(ApplyRound& round, std::vector<raft::Message>* send, bool* needs_sync) {
  return BeginReady(round.batch(), send, needs_sync, &round);
}

bool Replica::BeginReady(storage::WriteBatch& batch, std::vector<raft::Message>* send, bool* needs_sync) {
  return BeginReady(batch, send, needs_sync, nullptr);
}

bool Replica::BeginReady(storage::WriteBatch& batch, std::vector<raft::Message>* send, bool* needs_sync,
                         ApplyRound* round) {
  if (ready_) return false;
  ProposeQueued();
  if (!node_->has_ready()) return false;
  raft::HardState before = store_->hard_state();
  ready_ = node_->ready();
  raft::Ready& rd = *ready_;
  if (!rd.entries.empty() || rd.snapshot ||
      (rd.hard_state && (rd.hard_state->term != before.term || rd.hard_state->vote != before.vote))) {
    *needs_sync = true;
  }
  if (rd.soft_state) {
    if (rd.soft_state->role == raft::Role::kLeader) term_start_index_ = node_->raft().log().last_index();
    sm_->LeadershipChanged(rd.soft_state->role == raft::Role::kLeader);
    leader_.store(rd.soft_state->lead, std::memory_order_release);
    if (rd.soft_state->role != raft::Role::kLeader) lease_until_us_.store(0, std::memory_order_release);
  }
  if (rd.hard_state && rd.hard_state->commit > commit_.load(std::memory_order_relaxed)) {
    // Before the messages that tell followers of it leave (LeaseReadOk).
    commit_.store(rd.hard_state->commit, std::memory_order_release);
  }
  for (const auto& m : rd.messages) {
    // The transferee may win at once: no read may rely on the lease from here.
    if (m.type == raft::MessageType::kTimeoutNow) lease_until_us_.store(0, std::memory_order_release);
  }
  if (rd.snapshot) {
    import_gen_.fetch_add(1, std::memory_order_acq_rel);  // odd until the files are in (ApplyReady)
    kv::Shard::ImportMarker marker{ImportMarkerKey(opts_.group), EncodeMarker(rd.snapshot->meta)};
    SnapshotTicket t;
    Status s;
    if (SnapshotTicket::Decode(rd.snapshot->data, &t)) {
      std::string dir = opts_.courier != nullptr ? opts_.courier->Received(opts_.group, t) : "";
      s = dir.empty() ? Status::NotFound("the snapshot's image is gone")
                      : sm_->StageImportFiles(dir, rd.snapshot->meta.index, batch, marker);
      if (s.ok()) opts_.courier->Consumed(opts_.group, t);
    } else {
      s = sm_->StageImport(rd.snapshot->data, rd.snapshot->meta.index, batch, marker);
    }
    batch.Delete(storage::Cf::kRaft, marker.key);
    if (!s.ok()) {
      // Raft already counts the snapshot as taken: acknowledging it without
      // its data would let an empty replica be promoted. Stop instead; at
      // restart the replica asks for the snapshot again.
      spdlog::critical("group {}: snapshot at {} cannot be applied: {}", opts_.group,
                       rd.snapshot->meta.index, s.ToString());
      spdlog::default_logger()->flush();
      FailStop("snapshot import failed");
    }
    store_->ApplySnapshot(rd.snapshot->meta, batch);
  }
  if (!rd.entries.empty()) {
    // A lone leader's entries, committed as they are logged: their records
    // are not needed once the round has applied them, since no follower
    // reads them and a restart starts after them (RaftStore::FinishDeferred).
    // (A follower catching up may get entries already committed too: it
    // logs them, so that it can serve them to laggers should it lead.)
    const bool defer = round != nullptr && opts_.commit_lone_appends && is_leader() && !rd.snapshot &&
                       rd.hard_state && rd.hard_state->commit >= rd.entries.back().index;
    store_->Append(rd.entries, batch, defer);
    if (defer) {
      round->BeforeWrite([this](storage::WriteBatch& b) {
        if (store_->FinishDeferred(b, sm_->applied_index())) RecordAppliedUpTo(store_->first_index() - 1, b);
      });
    }
  }
  for (const auto& e : rd.entries) {
    SplitCommand split;
    if (e.type == raft::EntryType::kNormal && SplitCommand::Decode(e.data, &split)) {
      split_index_ = std::max(split_index_, e.index);
      lease_until_us_.store(0, std::memory_order_release);
    }
  }
  // A new commit index alone is not written (NoteHardState), except where
  // the entries to apply hold a membership change or a split: should the
  // node stop before their apply is written, its restart applies them at
  // once, as it did when every commit index was written. Nothing else would
  // tell it: a replica removed hears from no leader again, and a split's
  // guard against images from before it (the snapshot function) reads it.
  const bool landmark = std::any_of(rd.committed_entries.begin(), rd.committed_entries.end(), [](const raft::Entry& e) {
    SplitCommand split;
    return e.type == raft::EntryType::kConfChange || SplitCommand::Decode(e.data, &split);
  });
  if (rd.snapshot || landmark) {
    store_->SetHardState(rd.hard_state ? *rd.hard_state : store_->hard_state(), batch);
  } else if (rd.hard_state) {
    store_->NoteHardState(*rd.hard_state, batch);
  }
  for (auto& m : rd.messages) Route(std::move(m), send);
  // Images this replica was sending as leader go on after it loses its
  // leadership: their tickets will be refused (an older term), but each is
  // of a committed state, which its receiver takes on arrival
  // (ImageArrived); a big transfer does not start over with each leader.
  return true;
}

void Replica::Route(raft::Message m, std::vector<raft::Message>* send) {
  if (m.type != raft::MessageType::kSnap) {
    send->push_back(std::move(m));
    return;
  }
  SnapshotTicket t;
  if (!SnapshotTicket::Decode(m.snapshot.data, &t)) {
    // Inline image. The transport gives no delivery report; it counts as
    // sent. If it was lost, the leader's next probe is refused and it
    // sends another.
    snapshots_sent_.push_back(m.to);
    send->push_back(std::move(m));
    return;
  }
  auto it = exports_.find(t.export_id);
  if (t.from != opts_.node_id || it == exports_.end() || opts_.courier == nullptr) {
    snapshots_failed_.push_back(m.to);  // not ours to send (a received one)
    return;
  }
  std::optional<raft::Index> carrying = opts_.courier->Carrying(opts_.group, m.to);
  const auto& prs = node_->raft().tracker().progress();
  const auto pr = prs.find(m.to);
  if (carrying && *carrying + 1 >= store_->first_index() && pr != prs.end() && *carrying > pr->second.match) {
    // An image this node shipped to it earlier (before it lost and won
    // leadership again, or before it restarted) is still on its way, and
    // the log still holds what follows it: the receiver takes it on
    // arrival, and its outcome is this snapshot's (ReportSnapshot). A new
    // export would start the copy over. (Otherwise the new export replaces
    // it.)
    opts_.courier->Adopt(opts_.group, m.to, m.term);
    exports_.erase(it);
    snapshot_holds_[m.to] = Hold{*carrying, ticks_};
    return;
  }
  // The image carries its own metadata, so that it can be taken without
  // this ticket (a leader change while it travels: Replica::ImageArrived).
  ImageWriter write = [inner = std::move(it->second), group = opts_.group, recovery = recovery_,
                       marker = EncodeMarker(m.snapshot.meta)](const std::string& dir) {
    Status s = inner(dir);
    return s.ok() ? WriteImageMeta(dir, group, recovery, marker) : s;
  };
  exports_.erase(it);
  snapshot_holds_[m.to] = Hold{m.snapshot.meta.index, ticks_};
  sending_images_ = true;
  opts_.courier->Ship(opts_.group, std::move(m), std::move(write));
}

void ApplyRound::Flush() {
  for (auto& fn : before_) fn(*batch_);
  before_.clear();
  if (batch_->Count() > 0) {
    auto seq = engine_->Write(*batch_);
    ++writes_;
    if (!seq.ok()) {
      // What it held is applied in memory, and its log entries' messages may
      // be on their way: stop; the restart reads what the disk holds and
      // applies the log again.
      spdlog::critical("writing the Raft log and applies failed: {}; stopping this node", seq.status().ToString());
      spdlog::default_logger()->flush();
      FailStop("log and apply write failed");
    }
    last_seq_ = *seq;
    batch_->Clear();
  }
  // What runs may stage again (a later apply of another group): take them.
  // (Their vector's storage serves the next round; a Flush from inside one
  // of them takes fresh storage.)
  auto after = std::move(after_);
  after_ = std::move(spare_after_);
  after_.clear();
  for (auto& fn : after) fn();
  after.clear();
  if (after.capacity() > spare_after_.capacity()) spare_after_ = std::move(after);
}

void Replica::ApplyReady(int64_t now_mono_us) {
  ApplyRound round(engine_);
  ApplyReady(now_mono_us, round);
  round.Flush();
}

void Replica::ApplyReady(int64_t, ApplyRound& round) {
  SHOAL_CHECK(ready_.has_value());
  raft::Ready& rd = *ready_;
  if (rd.snapshot) {
    round.Flush();  // the image's staged state (BeginReady's) is written before it is taken
    sm_->FinishImport();
    import_gen_.fetch_add(1, std::memory_order_acq_rel);
    MaybeReleaseImage(rd.snapshot->meta.index);  // before a split among the entries below opens its child
    // Proposals below the snapshot can no longer be matched to their entries.
    for (auto it = writes_.begin(); it != writes_.end() && it->first <= rd.snapshot->meta.index;) {
      auto done = std::move(it->second.done);
      it = writes_.erase(it);
      done(false, "-TIMEOUT the write's outcome is unknown (replica restored from a snapshot)\r\n");
    }
  }
  ApplyCommitted(rd.committed_entries, round);
  for (const auto& rs : rd.read_states) {
    auto it = reads_.find(rs.context);
    if (it != reads_.end()) it->second.index = std::max<uint64_t>(rs.index, 1);
  }
  round.After([this] { ServeReads(); });
}

void Replica::FinishReady(std::vector<raft::Message>* send, int64_t now_mono_us) {
  FinishReady(send, now_mono_us, true);
}

bool Replica::MayFinishUnsynced() const {
  return ready_.has_value() && !retired_ && !ready_->entries.empty() && node_->may_advance_unsynced();
}

Replica::SyncReport Replica::FinishUnsynced(int64_t now_mono_us) {
  SHOAL_CHECK(MayFinishUnsynced());  // so nothing waits to be sent after the write
  const SyncReport report{ready_->entries.back().index, ready_->entries.back().term};
  std::vector<raft::Message> none;
  FinishReady(&none, now_mono_us, false);
  SHOAL_CHECK(none.empty());
  return report;
}

void Replica::Synced(const SyncReport& report) {
  if (!retired_) node_->synced(report.index, report.term);
}

void Replica::FinishReady(std::vector<raft::Message>* send, int64_t now_mono_us, bool synced) {
  SHOAL_CHECK(ready_.has_value());
  raft::Ready& rd = *ready_;
  if (retired_) {  // its state was deleted meanwhile: it promises nothing
    ready_.reset();
    MaybeReleaseImage();
    return;
  }
  for (auto& m : rd.messages_after_persist) Route(std::move(m), send);
  ready_.reset();
  if (synced) {
    node_->advance();
  } else {
    node_->advance_unsynced();
  }
  MaybeReleaseImage();
  for (raft::NodeId to : snapshots_sent_) node_->report_snapshot(to, false);
  snapshots_sent_.clear();
  for (raft::NodeId to : snapshots_failed_) node_->report_snapshot(to, true);
  snapshots_failed_.clear();
  ServeReads();
  Publish(now_mono_us);
}

void Replica::Answer(raft::Index index, raft::Term term, std::string reply) {
  auto pending = writes_.find(index);
  if (pending == writes_.end()) return;
  bool mine = pending->second.term == term;
  auto done = std::move(pending->second.done);
  writes_.erase(pending);
  if (mine) {
    done(true, std::move(reply));
  } else {
    done(false, "-TRYAGAIN the write was dropped by a leader change; retry\r\n");
  }
}

void Replica::ApplyCommitted(const std::vector<raft::Entry>& ents, ApplyRound& round) {
  storage::WriteBatch& batch = round.batch();
  // Entries are answered once what applied them is written.
  auto answer = [this, &round](const raft::Entry& e, std::string reply) {
    round.After([this, index = e.index, term = e.term, reply = std::move(reply)]() mutable {
      Answer(index, term, std::move(reply));
    });
  };
  // Runs of normal entries are applied together: staged into the round's
  // batch (one storage write with the worker's other groups), or written
  // alone where they must be. A second run of this group in the round reads
  // what the first wrote: the round is written first.
  std::vector<const raft::Entry*> run;
  std::vector<std::string> run_replies;
  bool staged_run = false;
  auto apply_run = [&] {
    if (run.empty()) return;
    if (staged_run) round.Flush();
    run_replies.assign(run.size(), std::string());
    std::vector<std::string*> outs(run.size(), nullptr);
    for (size_t i = 0; i < run.size(); ++i) {
      auto pending = writes_.find(run[i]->index);
      if (pending != writes_.end() && pending->second.term == run[i]->term) outs[i] = &run_replies[i];
    }
    if (sm_->StageMany(run, outs, round)) {
      staged_run = true;
    } else {
      // Written alone, after what is staged (this group's applied index
      // among it: a later one must not be overwritten by it).
      round.Flush();
      sm_->ApplyMany(run, outs);
    }
    for (size_t i = 0; i < run.size(); ++i) answer(*run[i], std::move(run_replies[i]));
    run.clear();
  };
  for (const auto& e : ents) {
    if (e.index <= sm_->applied_index()) continue;
    SplitCommand split;
    bool is_split = e.type == raft::EntryType::kNormal && SplitCommand::Decode(e.data, &split);
    if (e.type == raft::EntryType::kNormal && !e.data.empty() && !is_split) {
      run.push_back(&e);
      continue;
    }
    apply_run();
    if (is_split) {
      round.Flush();  // the split reads the store: earlier applies first
      ApplySplit(e, split, batch);
      staged_run = false;
      answer(e, "+OK\r\n");
    } else if (e.type == raft::EntryType::kConfChange) {
      auto cc = raft::decode_conf_change(e.data);
      if (cc.ok() && e.index <= void_conf_upto_) {
        // Left in the log from before an unsafe recovery: the forced
        // membership stands (applying it could bring back lost voters).
        spdlog::warn("group {}: membership change at {} predates the unsafe recovery; ignored", opts_.group, e.index);
      } else if (cc.ok()) {
        // Raft may send (and export an image) from here: what this group
        // applied before is written first.
        if (staged_run) round.Flush();
        staged_run = false;
        raft::ConfState cs = node_->apply_conf_change(*cc);
        store_->SetConfState(cs, batch);
        if (opts_.courier != nullptr && sending_images_) {
          // Images to nodes that left are not needed (whether or not this
          // replica still leads: a former leader's go on).
          std::vector<raft::NodeId> members = cs.voters;
          members.insert(members.end(), cs.voters_outgoing.begin(), cs.voters_outgoing.end());
          members.insert(members.end(), cs.learners.begin(), cs.learners.end());
          opts_.courier->Recall(opts_.group, members);
        }
      } else {
        spdlog::error("group {}: malformed membership change at {}", opts_.group, e.index);
      }
      sm_->StageApplied(e.index, batch);
      answer(e, "+OK\r\n");
    } else {
      sm_->StageApplied(e.index, batch);
      answer(e, "");
    }
  }
  apply_run();
  // Keep the log bounded: entries far below the applied index are dropped
  // (a follower that needs them gets a snapshot instead). Applied may run
  // past the log, and past its commit index, in a replica started over that
  // kept its state (ResetForRecovery): only committed entries the log holds
  // are compacted (an uncommitted one may yet be replaced by a leader's).
  uint64_t applied = std::min({sm_->applied_index(), store_->last_index(), store_->hard_state().commit});
  // A follower being sent a snapshot resumes from the log right after it:
  // keep those entries (within a bound) or it would need another snapshot.
  raft::Index floor = SnapshotFloor();
  auto compact = [&](raft::Index to) {
    RecordAppliedUpTo(to, batch);
    store_->Compact(to, batch);
  };
  auto held = [&](raft::Index to) {
    return floor != 0 && to > floor && to - floor <= opts_.compact_hold_entries ? floor : to;
  };
  if (applied >= store_->first_index() + opts_.compact_entries) {
    raft::Index to = held(applied - opts_.compact_entries / 2);
    if (to >= store_->first_index()) compact(to);
  }
  if (store_->log_bytes() > opts_.compact_bytes && applied >= store_->first_index() &&
      (floor == 0 || store_->log_bytes() > 16 * opts_.compact_bytes)) {
    // Keep about a quarter of the byte budget of applied entries for
    // followers that are slightly behind.
    raft::Index keep_from = applied;
    uint64_t kept = store_->entry_bytes(applied);
    while (keep_from > store_->first_index()) {
      kept += store_->entry_bytes(keep_from - 1);
      if (kept > opts_.compact_bytes / 4) break;
      --keep_from;
    }
    if (keep_from > store_->first_index()) compact(keep_from - 1);
  }
  // What is applied here was written to the engine before this round
  // applied it (BeginReady's batch): followers that need it again read it
  // back from there. Only the newest entries stay in memory, and every one
  // Raft has yet to hand over for applying (a state machine ahead of Raft's
  // applied index, after ResetForRecovery, skips them, but Raft reads them).
  // (Once the round is written: its log entries may be in the same batch.)
  const raft::Index handed = ents.empty() ? node_->raft().log().applied() : ents.back().index;
  round.After([this, handed] {
    store_->Uncache(std::min({sm_->applied_index(), handed, store_->last_index()}), opts_.log_cache_bytes);
    if (store_->read_errors() > read_errors_logged_) {
      read_errors_logged_ = store_->read_errors();
      spdlog::error("group {}: reading the Raft log back from storage failed ({} times so far; followers that "
                    "need those entries are sent a snapshot instead): {}",
                    opts_.group, read_errors_logged_, store_->last_read_error().ToString());
    }
    // Lease reads on other threads read storage once this is published.
    applied_.store(sm_->applied_index(), std::memory_order_release);
  });
}

void Replica::RecordAppliedUpTo(raft::Index log_start, storage::WriteBatch& batch) {
  // A restart must find every entry before the log's start applied; an
  // apply that changed nothing does not rewrite the stored applied index.
  if (sm_->recorded_applied_index() < log_start) sm_->StageApplied(sm_->applied_index(), batch);
}

void Replica::ApplySplit(const raft::Entry& e, const SplitCommand& split, storage::WriteBatch& batch) {
  // Whether the group splits is decided by replicated state only (its range
  // and membership at this index), so every replica decides alike; whether
  // a child is created here is this node's business (the splitter's).
  auto* kv_sm = dynamic_cast<KvStateMachine*>(sm_.get());
  const raft::ConfState cs = store_->conf_state();
  const char* refused = kv_sm == nullptr                 ? "the group holds no data shard"
                        : !cs.voters_outgoing.empty()    ? "the group is changing its membership"
                        : split.slot <= kv_sm->shard()->slot_begin() || split.slot >= kv_sm->shard()->slot_end()
                            ? "the slot is not inside the shard's range"
                            : nullptr;
  if (refused != nullptr) {
    spdlog::warn("group {}: split at {} into group {} ignored: {}", opts_.group, e.index, split.child, refused);
    sm_->StageApplied(e.index, batch);
    return;
  }
  SHOAL_CHECK(batch.Count() == 0);  // the round was written first: Clear() below drops only the split's
  bool child_here = opts_.splitter != nullptr && opts_.splitter->StageSplit(*this, split, cs, e.index, batch);
  if (!child_here) {
    batch.Clear();  // whatever a refusing splitter staged
    Status s = kv_sm->shard()->StageSplit(static_cast<uint32_t>(split.child), split.slot, e.index, batch,
                                          /*write_child=*/false);
    if (!s.ok()) {
      spdlog::error("group {}: split at {}: {}", opts_.group, e.index, s.ToString());
      sm_->StageApplied(e.index, batch);
    }
  }
  auto seq = engine_->Write(batch);
  batch.Clear();
  if (!seq.ok()) {
    // Going on would leave this replica holding slots the others gave away.
    // Stop; at restart the entry applies again.
    spdlog::critical("group {}: split write at {} failed: {}", opts_.group, e.index, seq.status().ToString());
    spdlog::default_logger()->flush();
    FailStop("split write failed");
  }
  kv_sm->shard()->FinishSplit();
  spdlog::info("group {}: split at log index {}: slots from {} now belong to group {}{}", opts_.group, e.index,
               split.slot, split.child, child_here ? "" : " (no replica of it created here)");
  if (child_here) opts_.splitter->FinishSplit(*this, split);
}

raft::Index Replica::SnapshotFloor() {
  const raft::Raft& r = node_->raft();
  if (r.role() != raft::Role::kLeader) {
    snapshot_holds_.clear();
    return 0;
  }
  // A hold lasts until the follower's log matches past the snapshot (it
  // imported it and caught up), or 2400 ticks (2 minutes at 50 ms).
  raft::Index floor = 0;
  for (auto it = snapshot_holds_.begin(); it != snapshot_holds_.end();) {
    auto pr = r.tracker().progress().find(it->first);
    if (pr == r.tracker().progress().end() || pr->second.match >= it->second.index ||
        ticks_ - it->second.since_tick > 2400) {
      it = snapshot_holds_.erase(it);
      continue;
    }
    if (floor == 0 || it->second.index < floor) floor = it->second.index;
    ++it;
  }
  return floor;
}

void Replica::ServeReads() {
  uint64_t applied = sm_->applied_index();
  for (auto it = reads_.begin(); it != reads_.end();) {
    if (it->second.index == 0 || it->second.index > applied) {
      ++it;
      continue;
    }
    auto done = std::move(it->second.done);
    it = reads_.erase(it);
    done(true);
  }
}

void Replica::Publish(int64_t now_mono_us) {
  const raft::Raft& r = node_->raft();
  if (retired_) return;
  const raft::ConfState& cs = r.tracker().conf_state();
  if (auto cur = published_conf(); cur == nullptr || !(*cur == cs)) {
    std::atomic_store(&conf_, std::shared_ptr<const raft::ConfState>(std::make_shared<raft::ConfState>(cs)));
  }
  // A read not confirmed yet when leadership changes may never be (its
  // heartbeat round or the leader it was sent to is gone): it fails now, to
  // be asked again, rather than when its time is up.
  if (r.term() != reads_term_ || r.lead() != reads_leader_) {
    reads_term_ = r.term();
    reads_leader_ = r.lead();
    for (auto it = reads_.begin(); it != reads_.end();) {
      if (it->second.index != 0) {
        ++it;
        continue;
      }
      auto done = std::move(it->second.done);
      it = reads_.erase(it);
      done(false);
    }
  }
  // A learner never campaigns (nor does a voter that cannot: a membership
  // change not applied, a snapshot pending), so its Raft keeps naming a
  // leader it lost long ago; published, that would count a dead group as
  // led (INFO, STATUS, routing): a leader not heard from for two election
  // timeouts is none.
  const bool lead_heard = r.role() == raft::Role::kLeader ||
                          HeardFromLeaderWithin(2 * static_cast<uint64_t>(opts_.election_tick));
  leader_.store(lead_heard ? r.lead() : raft::kNoNode, std::memory_order_release);
  term_.store(r.term(), std::memory_order_release);
  applied_.store(sm_->applied_index(), std::memory_order_release);
  bool lease = r.role() == raft::Role::kLeader && r.lease_valid() &&
               !Stopping() &&
               sm_->applied_index() >= term_start_index_ && sm_->applied_index() >= split_index_;
  int64_t until = lease ? LeaseEnd(r.lease_start_tick()) : 0;
  lease_until_us_.store(until > now_mono_us ? until : 0, std::memory_order_release);
}

int64_t Replica::LeaseEnd(uint64_t tick) const {
  // The time of the latest recorded tick at or before `tick`: the message
  // stamped `tick` left no earlier, and each follower that echoed it refuses
  // votes for an election timeout from when it arrived (Step). A tenth of
  // that, and one tick, are kept back for clock rate differences between
  // machines and for the time a tick takes to run.
  auto it = std::find_if(tick_times_.rbegin(), tick_times_.rend(), [tick](const auto& t) { return t.first <= tick; });
  if (it == tick_times_.rend() || tick == 0) return 0;  // older than the record: no lease
  const int64_t at = it->second;
  const int64_t election_us = int64_t{opts_.election_tick} * opts_.tick_ms * 1000;
  return at + election_us - election_us / 10 - int64_t{opts_.tick_ms} * 1000;
}

}  // namespace shoal::replica
