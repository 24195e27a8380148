//! forkyard-mapreduce against real worker processes.
