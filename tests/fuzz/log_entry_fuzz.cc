// libFuzzer target: everything a replica decodes from a Raft log entry (a
// peer sends the entries) must refuse bad bytes cleanly: the kv write batch
// and its entries, split commands, snapshot tickets, membership changes, and
// the meta shard's commands (applied to a small cluster state).
// What decodes must encode back to something that decodes alike.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cluster/meta.h"
#include <google/protobuf/stubs/logging.h>

#include "fuzz_seeds.h"
#include "kv/commands.h"
#include "kv/entry.h"
#include "raft/types.h"
#include "replica/replica.h"

using namespace shoal;

std::vector<std::string> FuzzSeeds() {
  kv::Entry set;
  set.op = 1;
  set.db = 3;
  set.now_ms = 1'700'000'000'000;
  set.args = {"key", "value", "px", "100"};
  kv::Entry append = set;
  append.args = {"k", "tail", "536870912"};
  replica::SplitCommand split{.child = 9, .slot = 8000};
  replica::SnapshotTicket ticket;
  ticket.from = 2;
  ticket.export_id = 7;
  raft::ConfChange cc{{raft::ConfChangeSingle{raft::ConfChangeType::kAddLearner, 4}}};
  proto::MetaCommand meta;
  meta.set_version(1);
  auto* node = meta.mutable_add_node();
  node->set_id(4);
  node->set_host("127.0.0.5");
  node->set_port(7004);
  node->set_peer_port(17004);
  return {meta.SerializeAsString(), replica::EncodeKvBatch({set, append}, 2), replica::EncodeKvBatch({set}, 3), kv::EncodeEntry(set),
          split.Encode(), ticket.Encode(), raft::encode_conf_change(cc)};
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = (google::protobuf::SetLogHandler(nullptr), true);  // malformed input is expected
  (void)quiet;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<kv::Entry> entries;
  int protocol = 0;
  if (replica::DecodeKvBatch(in, &entries, &protocol)) {
    for (const kv::Entry& e : entries) (void)kv::EntryKey(e);
    std::vector<kv::Entry> again;
    int p2 = 0;
    SHOAL_CHECK(replica::DecodeKvBatch(replica::EncodeKvBatch(entries, protocol), &again, &p2));
    SHOAL_CHECK(again.size() == entries.size() && p2 == protocol);
  }
  kv::Entry e;
  if (kv::DecodeEntry(in, &e)) {
    kv::Entry back;
    SHOAL_CHECK(kv::DecodeEntry(kv::EncodeEntry(e), &back) && back.args == e.args && back.op == e.op);
  }
  replica::SplitCommand split;
  if (replica::SplitCommand::Decode(in, &split)) {
    replica::SplitCommand back;
    SHOAL_CHECK(replica::SplitCommand::Decode(split.Encode(), &back) && back.child == split.child &&
                back.slot == split.slot);
  }
  replica::SnapshotTicket ticket;
  (void)replica::SnapshotTicket::Decode(in, &ticket);
  (void)raft::decode_conf_change(in);
  proto::MetaCommand cmd;
  if (cmd.ParseFromArray(data, static_cast<int>(size))) {
    proto::MetaState state;
    state.set_cluster_id(1);
    auto* n = state.add_nodes();
    n->set_id(1);
    n->set_host("127.0.0.2");
    n->set_port(7001);
    auto* shard = state.add_shards();
    shard->set_id(1);
    shard->set_slot_end(16384);
    shard->add_replicas(1);
    (void)cluster::ApplyMetaCommand(cmd, &state);
  }
  return 0;
}
