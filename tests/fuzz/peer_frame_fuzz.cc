// libFuzzer target: a frame from the peer port (any process that can reach
// it) must be refused cleanly when malformed: the frame itself, each Raft
// message in it (node::FromProto), and what converts back must round-trip.
#include <cstddef>
#include <cstdint>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "fuzz_seeds.h"
#include "node/codec.h"
#include "peer.pb.h"

using namespace shoal;

std::vector<std::string> FuzzSeeds() {
  proto::PeerFrame pf;
  pf.set_version(1);
  pf.set_cluster_id(0x1234);
  pf.set_from_node(2);
  pf.set_from_host("127.0.0.2");
  pf.set_from_peer_port(7100);
  raft::Message m{.type = raft::MessageType::kApp, .to = 1, .from = 2, .term = 5, .log_term = 4, .index = 10};
  m.entries.push_back(raft::Entry{.term = 5, .index = 11, .type = raft::EntryType::kNormal, .data = "x"});
  m.commit = 10;
  auto* gm = pf.add_messages();
  gm->set_group(3);
  node::ToProto(m, gm->mutable_msg());
  raft::Message hb{.type = raft::MessageType::kHeartbeat, .to = 1, .from = 2, .term = 5, .commit = 9};
  hb.context = "ctx";
  node::ToProto(hb, pf.add_messages()->mutable_msg());
  auto* l = pf.add_leaders();
  l->set_group(3);
  l->set_term(5);
  l->add_voters(1);
  l->add_voters(2);
  auto* c = pf.add_chunks();
  c->set_group(3);
  c->set_from(2);
  c->set_to(1);
  c->set_data("bytes");
  return {pf.SerializeAsString()};
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = (google::protobuf::SetLogHandler(nullptr), true);  // malformed input is expected
  (void)quiet;
  proto::PeerFrame pf;
  if (!pf.ParseFromArray(data, static_cast<int>(size))) return 0;
  for (const auto& gm : pf.messages()) {
    raft::Message m;
    if (!node::FromProto(gm.msg(), &m)) continue;
    proto::RaftMessage back;
    node::ToProto(m, &back);
    raft::Message again;
    SHOAL_CHECK(node::FromProto(back, &again));
    SHOAL_CHECK(again.type == m.type && again.term == m.term && again.entries.size() == m.entries.size() &&
                again.context == m.context);
  }
  return 0;
}
