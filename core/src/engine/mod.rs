//! Orchestration of writes, reads and compaction. (Being written.)
