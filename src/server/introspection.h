// INFO and COMMAND: what the server says about itself.
#pragma once

#include <string>
#include <vector>

#include "kv/commands.h"
#include "resp/writer.h"

namespace shoal::server {

class Server;
class Connection;

// The Redis version shoal's command semantics follow (reported by HELLO and INFO).
inline constexpr const char* kRedisCompatVersion = "7.0.15";

// INFO text for the given sections (lower case; empty, "default", "all" or
// "everything" mean all of them).
std::string BuildInfo(Server& server, const std::vector<std::string>& sections);

// COMMAND [COUNT | INFO names... | DOCS names... | LIST | GETKEYS cmd args...]
void CommandCmd(Connection& c, kv::Args args, resp::Writer* r);

}  // namespace shoal::server
