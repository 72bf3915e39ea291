#include "layercache/version.h"

namespace layercache {
const char* Version() { return LAYERCACHE_VERSION; }
}  // namespace layercache
