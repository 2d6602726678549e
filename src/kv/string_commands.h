// Internal to src/kv: each command group adds its specs to the table.
#pragma once

#include <vector>

#include "kv/commands.h"

namespace shoal::kv {

void AppendStringCommands(std::vector<CommandSpec>* out);
void AppendKeyspaceCommands(std::vector<CommandSpec>* out);
void AppendHashCommands(std::vector<CommandSpec>* out);
void AppendSetCommands(std::vector<CommandSpec>* out);
void AppendListCommands(std::vector<CommandSpec>* out);
void AppendZsetCommands(std::vector<CommandSpec>* out);
void AppendBitmapCommands(std::vector<CommandSpec>* out);
void AppendHllCommands(std::vector<CommandSpec>* out);
void AppendDumpCommands(std::vector<CommandSpec>* out);

}  // namespace shoal::kv
