// Compiled into the shoal binary only when it links jemalloc
// (cmake -DSHOAL_MALLOC=jemalloc, src/cli/CMakeLists.txt). jemalloc reads
// this global when it starts; MALLOC_CONF in the environment still
// overrides it. A background thread hands pages freed for a second back to
// the system, as Redis does with the same jemalloc: without it the memory a
// burst of writes used stays resident until the next allocations.
extern "C" {
extern const char* malloc_conf;
const char* malloc_conf = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";
}
