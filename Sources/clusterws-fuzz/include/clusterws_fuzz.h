#ifndef CLUSTERWS_FUZZ_H
#define CLUSTERWS_FUZZ_H
// Exported by the Swift target ClusterWSFuzzTargets.
int clusterws_fuzz_replay(int argc, char **argv);
#endif
