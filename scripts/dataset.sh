# Sourced by the benchmark scripts: sets `data` to the dataset to run on — CHROMA_DEV_DATA
# when set, else the 20,000-vector dev set beside the repository (../shared/data/dev)
# when it is there, else the repository's own 2,000-vector sample (tests/data/sample).
# Expects `root` (the repository) to be set.
data="${CHROMA_DEV_DATA:-}"
if [ -z "$data" ]; then
  if [ -f "$root/../shared/data/dev/base.npy" ]; then data="$root/../shared/data/dev"; else data="$root/tests/data/sample"; fi
fi
