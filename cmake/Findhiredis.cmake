# Finds hiredis and provides the imported target hiredis::hiredis.
#
# Tried in order: hiredis 1.x's own CMake config, pkg-config, then find_path/find_library.
# Debian's hiredis 0.14 ships a HiredisConfig.cmake that only sets variables and fails when
# asked without a version, so it is never used.
include(FindPackageHandleStandardArgs)

if(NOT TARGET hiredis::hiredis)
  find_package(hiredis CONFIG QUIET NO_MODULE)
endif()

if(NOT TARGET hiredis::hiredis)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(_callguard_hiredis QUIET IMPORTED_TARGET GLOBAL hiredis)
    if(_callguard_hiredis_FOUND)
      add_library(hiredis::hiredis INTERFACE IMPORTED GLOBAL)
      target_link_libraries(hiredis::hiredis INTERFACE PkgConfig::_callguard_hiredis)
      set(hiredis_VERSION "${_callguard_hiredis_VERSION}")
    endif()
  endif()
endif()

if(NOT TARGET hiredis::hiredis)
  find_path(HIREDIS_INCLUDE_DIR hiredis/hiredis.h)
  find_library(HIREDIS_LIBRARY NAMES hiredis)
  if(HIREDIS_INCLUDE_DIR AND HIREDIS_LIBRARY)
    add_library(hiredis::hiredis UNKNOWN IMPORTED GLOBAL)
    set_target_properties(hiredis::hiredis PROPERTIES
      IMPORTED_LOCATION "${HIREDIS_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${HIREDIS_INCLUDE_DIR}")
  endif()
endif()

if(TARGET hiredis::hiredis)
  set(_callguard_hiredis_target hiredis::hiredis)
endif()
find_package_handle_standard_args(hiredis
  REQUIRED_VARS _callguard_hiredis_target
  VERSION_VAR hiredis_VERSION)
