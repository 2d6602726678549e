// RESP reply writer: appends RESP2 or RESP3 encodings to a caller's buffer.
// Types RESP2 lacks (map, set, double, null, bool) are downgraded exactly as
// redis-server does. Knows nothing of the database.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace shoal::resp {

class Writer {
 public:
  explicit Writer(std::string* out, int protocol = 2) : out_(out), protocol_(protocol) {}

  int protocol() const { return protocol_; }
  void set_protocol(int protocol) { protocol_ = protocol; }
  std::string* buffer() { return out_; }

  void Simple(std::string_view s);  // +OK
  void Error(std::string_view s);   // "-ERR ..." — s must include its code ("ERR ...")
  void Integer(int64_t v);
  void Bulk(std::string_view s);
  void NullBulk();   // $-1 (RESP2) / _ (RESP3)
  void NullArray();  // *-1 (RESP2) / _ (RESP3)
  void ArrayHeader(size_t n);
  void MapHeader(size_t pairs);  // RESP3 %n, RESP2 *2n
  void SetHeader(size_t n);      // RESP3 ~n, RESP2 *n
  void Double(double v);         // RESP3 ,v ; RESP2 bulk
  void Bool(bool v);             // RESP3 #t/#f ; RESP2 :1/:0
  void Verbatim(std::string_view s);  // RESP3 =txt: ; RESP2 bulk
  void Raw(std::string_view bytes) { out_->append(bytes); }

  static std::string FormatDouble(double v);

 private:
  void Header(char type, int64_t n);
  std::string* out_;
  int protocol_;
};

}  // namespace shoal::resp
