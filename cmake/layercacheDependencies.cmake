# Imported targets for the libraries layercache links that ship no CMake
# package of their own (Debian's libxxhash-dev, libzstd-dev, libhiredis-dev).
# Included by the build and by the installed layercacheConfig.cmake.
foreach(_lc_dep xxhash zstd hiredis)
  if(NOT TARGET layercache_deps::${_lc_dep})
    find_library(LAYERCACHE_${_lc_dep}_LIBRARY NAMES ${_lc_dep})
    if(NOT LAYERCACHE_${_lc_dep}_LIBRARY)
      set(${CMAKE_FIND_PACKAGE_NAME}_FOUND FALSE)
      set(${CMAKE_FIND_PACKAGE_NAME}_NOT_FOUND_MESSAGE
          "layercache needs lib${_lc_dep} (Debian: lib${_lc_dep}-dev)")
      message(FATAL_ERROR "layercache needs lib${_lc_dep} (Debian: lib${_lc_dep}-dev)")
    endif()
    add_library(layercache_deps::${_lc_dep} UNKNOWN IMPORTED)
    set_target_properties(layercache_deps::${_lc_dep} PROPERTIES
      IMPORTED_LOCATION "${LAYERCACHE_${_lc_dep}_LIBRARY}")
  endif()
endforeach()
unset(_lc_dep)
