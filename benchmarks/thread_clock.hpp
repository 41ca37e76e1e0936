// The calling thread's CPU time in seconds, for the C++ probes under
// benchmarks/: other processes on the cores count less in it than in wall time.
#pragma once

#include <ctime>

inline double thread_cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}
