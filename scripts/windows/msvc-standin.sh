#!/usr/bin/env bash
# Check-only stand-in for MSVC's cl.exe and lib.exe (scripts/windows.sh
# --msvc-check): writes an empty file wherever the real tool would write
# an object or a library, and compiles nothing. Only for `cargo check`,
# which links nothing: a build with it would be a lie, so nothing is run.
for arg in "$@"; do
    case $arg in
        -Fo*|/Fo*) out=${arg:3} ;;
        -out:*|/out:*|-OUT:*|/OUT:*) out=${arg:5} ;;
        -Fe*|/Fe*) out=${arg:3} ;;
    esac
done
prev=
for arg in "$@"; do
    [[ $prev == -o ]] && out=$arg
    prev=$arg
done
if [[ -n ${out:-} ]]; then
    [[ $out == */ ]] && exit 0
    : >"$out"
fi
# `cl -?`/version probes: say we are cl.
echo "Microsoft (R) C/C++ Optimizing Compiler Version 19.40 for x64 (check-only stand-in)" >&2
exit 0
