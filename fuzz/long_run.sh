#!/bin/bash
# The long fuzzing run, with the C extensions built under AddressSanitizer + UBSan.
#
#   fuzz/long_run.sh UNTIL [SLICE]      e.g.  fuzz/long_run.sh 22:10 300
#
# 1. Copies src/, native/ and the build files to $CKPTPEEK_ASAN_DIR/tree (default
#    /tmp/ckptpeek-asan): the shared in-place .so files of the working tree are never
#    touched. Builds both extensions there with gcc -fsanitize=address,undefined. The
#    flags go in CC only (LDSHARED stays plain) so the .so files do not link gcc's
#    libasan: the ASan runtime is atheris' asan_with_fuzzer.so (LLVM's, with libFuzzer
#    inside), preloaded, and gcc's UBSan runtime is preloaded after it. (Preloading gcc's
#    libasan instead breaks atheris' coverage feedback: its sanitizer-coverage symbols
#    shadow libFuzzer's.)
# 2. Runs the harnesses in turn, SLICE seconds each (fuzz/run.py), niced, one at a time,
#    until UNTIL: those that run our C code (pickle, zipdir, open, dirs) under the
#    sanitizers with PYTHONMALLOC=malloc (so ASan sees every object), the pure-Python
#    surfaces (safetensors, catalog), the CLI's output and the torch differential without
#    them (ten times faster). Corpora, findings and logs accumulate in
#    $CKPTPEEK_ASAN_DIR/state; each slice's log is kept in .../logs.
set -euo pipefail
UNTIL=$(date -d "${1:?usage: long_run.sh UNTIL [SLICE]}" +%s)
SLICE=${2:-300}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
WORK=${CKPTPEEK_ASAN_DIR:-/tmp/ckptpeek-asan}
mkdir -p "$WORK/tree" "$WORK/logs"
tar -C "$REPO" --exclude='*.so' --exclude='*.c' -cf - src native setup.py pyproject.toml README.md MANIFEST.in |
    tar -C "$WORK/tree" -xf -
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
(cd "$WORK/tree" && nice -n 19 env CKPTPEEK_REQUIRE_EXTENSIONS=1 CC="gcc $SAN" \
    LDSHARED="gcc -shared -pthread" python setup.py -q build_ext --inplace -b build -t tmp) \
    >"$WORK/build.log" 2>&1
ATHERIS=$(python -c 'import atheris; print(atheris.path())')
sanitized() {
    env PYTHONPATH="$WORK/tree/src" CKPTPEEK_FUZZ_DIR="$WORK/state" \
        LD_PRELOAD="$ATHERIS/asan_with_fuzzer.so $(gcc -print-file-name=libubsan.so)" \
        ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 PYTHONMALLOC=malloc "$@"
}
plain() {
    env PYTHONPATH="$WORK/tree/src" CKPTPEEK_FUZZ_DIR="$WORK/state" "$@"
}
round=0
while [ "$(date +%s)" -lt "$UNTIL" ]; do
    round=$((round + 1))
    for h in pickle open zipdir dirs safetensors catalog cli torch; do
        left=$((UNTIL - $(date +%s)))
        [ "$left" -gt 30 ] || break
        mode=sanitized timeout=30 # ASan and PYTHONMALLOC=malloc: 3-30 times slower
        case $h in safetensors | catalog | cli | torch) mode=plain timeout=10 ;; esac
        echo "=== round $round $h ($mode) $(date -u +%H:%M:%S)"
        $mode nice -n 19 python "$HERE/run.py" --seconds $((left < SLICE ? left : SLICE)) \
            --harness "$h" --timeout $timeout --memory-mb 4096 || true
        cp "$WORK/state/logs/$h.log" "$WORK/logs/$h-r$round.log"
    done
done
echo "=== done $(date -u +%H:%M:%S)"
