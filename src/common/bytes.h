// Fixed-size numbers in byte strings, in the machine's order (little endian
// on every platform shoal builds for): the log entries' and images'
// encodings.
#pragma once

#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

namespace shoal {

template <typename T>
void PutFixed(std::string* out, T v) {
  static_assert(std::is_trivially_copyable_v<T>);
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out->append(b, sizeof(T));
}

// Reads a T from the front of *in and drops it; false if *in is too short.
template <typename T>
bool GetFixed(std::string_view* in, T* v) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (in->size() < sizeof(T)) return false;
  std::memcpy(v, in->data(), sizeof(T));
  in->remove_prefix(sizeof(T));
  return true;
}

}  // namespace shoal
