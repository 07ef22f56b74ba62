#!/usr/bin/env bash
# The 10M measurement plan as actually run (fewer repetitions than at 1M: time box).
# (An empty config list runs no query: pass a harmless flag such as "--threads 2".)
cd "$(dirname "$0")"
./bench.sh 10000000 wide 1 "" 3 "--threads 2,--memory-limit 256MB"
./bench.sh 10000000 wide 0 "" 1 "--approx"
./bench.sh 10000000 narrow 1 "" 1 "--threads 2"
./bench.sh 10000000 wide 0 "" 2 "--memory-limit 256MB"
