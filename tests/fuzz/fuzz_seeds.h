// Seeds for the fuzz targets: each target defines FuzzSeeds(), valid inputs
// that the smoke driver (smoke_main.cc) mutates; libFuzzer builds use a
// corpus instead and ignore it.
#pragma once

#include <string>
#include <vector>

std::vector<std::string> FuzzSeeds();
