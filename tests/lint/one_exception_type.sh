#!/usr/bin/env bash
# The library throws one exception type, layercache::Error, carrying a Status
# (include/layercache/status.h). This check fails when the library, the CLI
# or the Python bindings throw or catch a standard exception type in its
# place. Allowed: std::bad_alloc (out of memory), documented in status.h.
# Usage: one_exception_type.sh SOURCE_DIR
set -euo pipefail
root=${1:?usage: one_exception_type.sh SOURCE_DIR}
cd "$root"
dirs=(src include tools python/src)
for d in "${dirs[@]}"; do
  [ -d "$d" ] || { echo "one_exception_type: $root/$d is missing" >&2; exit 1; }
done
bad=$(grep -rnE --include='*.cc' --include='*.h' --include='*.cu' \
  'throw[[:space:]]+std::|catch[[:space:]]*\([[:space:]]*(const[[:space:]]+)?std::(invalid_argument|out_of_range|runtime_error|logic_error|domain_error|length_error|range_error)' \
  "${dirs[@]}" | grep -vE 'throw[[:space:]]+std::bad_alloc\(\)' || true)
if [ -n "$bad" ]; then
  echo "Throw layercache::Error(Status::...) instead of a standard exception" >&2
  echo "(include/layercache/status.h: the library's one exception type):" >&2
  echo "$bad" >&2
  exit 1
fi
count=$(grep -rnoE --include='*.cc' --include='*.h' 'throw[[:space:]]+Error\(' "${dirs[@]}" | wc -l)
if [ "$count" -lt 50 ]; then  # the check must see the sources it guards
  echo "one_exception_type: only $count 'throw Error(' sites under $root; wrong directory?" >&2
  exit 1
fi
echo "one_exception_type: no standard exception thrown or caught in ${dirs[*]} ($count throw Error sites)"
