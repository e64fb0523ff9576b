// The fuzzing executable. Built normally it replays inputs through a target
// (clusterws-fuzz <target> <files>); built with -sanitize=fuzzer and
// -DCLUSTERWS_LIBFUZZER (make fuzz), libFuzzer provides main() and calls the
// LLVMFuzzerTestOneInput exported by ClusterWSFuzzTargets.
#include "clusterws_fuzz.h"

#ifndef CLUSTERWS_LIBFUZZER
int main(int argc, char **argv) { return clusterws_fuzz_replay(argc, argv); }
#endif
