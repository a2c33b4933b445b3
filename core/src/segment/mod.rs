//! On-disk formats. (Being written.)
