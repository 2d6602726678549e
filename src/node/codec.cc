#include "node/codec.h"

namespace shoal::node {
namespace {

void ConfToProto(const raft::ConfState& cs, proto::ConfState* out) {
  for (auto id : cs.voters) out->add_voters(id);
  for (auto id : cs.voters_outgoing) out->add_voters_outgoing(id);
  for (auto id : cs.learners) out->add_learners(id);
}

void ConfFromProto(const proto::ConfState& in, raft::ConfState* cs) {
  cs->voters.assign(in.voters().begin(), in.voters().end());
  cs->voters_outgoing.assign(in.voters_outgoing().begin(), in.voters_outgoing().end());
  cs->learners.assign(in.learners().begin(), in.learners().end());
}

}  // namespace

void ToProto(const raft::Message& m, proto::RaftMessage* out) {
  out->set_type(static_cast<uint32_t>(m.type));
  out->set_to(m.to);
  out->set_from(m.from);
  out->set_term(m.term);
  out->set_log_term(m.log_term);
  out->set_index(m.index);
  for (const auto& e : m.entries) {
    auto* pe = out->add_entries();
    pe->set_term(e.term);
    pe->set_index(e.index);
    pe->set_type(static_cast<uint32_t>(e.type));
    pe->set_data(e.data);
  }
  out->set_commit(m.commit);
  out->set_reject(m.reject);
  out->set_reject_hint(m.reject_hint);
  out->set_hint_term(m.hint_term);
  out->set_lease_tick(m.lease_tick);
  if (!m.snapshot.empty()) {
    auto* s = out->mutable_snapshot();
    s->set_index(m.snapshot.meta.index);
    s->set_term(m.snapshot.meta.term);
    ConfToProto(m.snapshot.meta.conf_state, s->mutable_conf_state());
    s->set_data(m.snapshot.data);
  }
  out->set_context(m.context);
}

bool FromProto(const proto::RaftMessage& in, raft::Message* m) {
  if (in.type() > static_cast<uint32_t>(raft::MessageType::kReadIndexResp)) return false;
  m->type = static_cast<raft::MessageType>(in.type());
  if (raft::is_local_message(m->type)) return false;
  m->to = in.to();
  m->from = in.from();
  m->term = in.term();
  m->log_term = in.log_term();
  m->index = in.index();
  m->entries.reserve(static_cast<size_t>(in.entries_size()));
  for (const auto& pe : in.entries()) {
    if (pe.type() > static_cast<uint32_t>(raft::EntryType::kConfChange)) return false;
    m->entries.push_back(raft::Entry{pe.term(), pe.index(), static_cast<raft::EntryType>(pe.type()), pe.data()});
  }
  m->commit = in.commit();
  m->reject = in.reject();
  m->reject_hint = in.reject_hint();
  m->hint_term = in.hint_term();
  m->lease_tick = in.lease_tick();
  if (in.has_snapshot()) {
    m->snapshot.meta.index = in.snapshot().index();
    m->snapshot.meta.term = in.snapshot().term();
    ConfFromProto(in.snapshot().conf_state(), &m->snapshot.meta.conf_state);
    m->snapshot.data = in.snapshot().data();
  }
  m->context = in.context();
  if (m->from == raft::kNoNode || m->to == raft::kNoNode) return false;
  return true;
}

}  // namespace shoal::node
