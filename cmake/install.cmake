# Install rules: headers, the exported targets, a relocatable package config with its version
# file, our Findhiredis.cmake beside it, and pkg-config files. Header-only: everything goes
# under the architecture-independent data folder.
include(CMakePackageConfigHelpers)

set(_cg_targets callguard)
if(CALLGUARD_WITH_REDIS)
  list(APPEND _cg_targets callguard_redis)
endif()
set(CALLGUARD_CONFIG_DIR "${CMAKE_INSTALL_DATADIR}/cmake/callguard")

install(TARGETS ${_cg_targets} EXPORT callguardTargets)
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(EXPORT callguardTargets NAMESPACE callguard:: DESTINATION "${CALLGUARD_CONFIG_DIR}")

configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/callguardConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/callguardConfig.cmake" INSTALL_DESTINATION "${CALLGUARD_CONFIG_DIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/callguardConfigVersion.cmake"
  COMPATIBILITY SameMajorVersion ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/callguardConfig.cmake"
              "${PROJECT_BINARY_DIR}/callguardConfigVersion.cmake"
              "${PROJECT_SOURCE_DIR}/cmake/Findhiredis.cmake"
        DESTINATION "${CALLGUARD_CONFIG_DIR}")

# pkg-config: a header-only library has no -l of its own, only its dependencies'. Relocatable:
# the prefix is found from ${pcfiledir}, the folder the .pc file was installed in
# (<prefix>/<datadir>/pkgconfig), so `cmake --install build --prefix X` gives flags under X. An
# absolute CMAKE_INSTALL_DATADIR or CMAKE_INSTALL_INCLUDEDIR does not move with the prefix and
# is written as it is.
set(_cg_pc_install_dir "${CMAKE_INSTALL_DATADIR}/pkgconfig")
if(IS_ABSOLUTE "${CMAKE_INSTALL_DATADIR}")
  set(CALLGUARD_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  # "share/pkgconfig" -> "../.."; a deeper DATADIR climbs further.
  file(RELATIVE_PATH _cg_pc_up "/callguard_prefix/${_cg_pc_install_dir}" "/callguard_prefix")
  string(REGEX REPLACE "/+$" "" _cg_pc_up "${_cg_pc_up}")
  set(CALLGUARD_PC_PREFIX "\${pcfiledir}/${_cg_pc_up}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(CALLGUARD_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(CALLGUARD_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file("${PROJECT_SOURCE_DIR}/cmake/callguard.pc.in" "${PROJECT_BINARY_DIR}/callguard.pc" @ONLY)
set(_cg_pc_files "${PROJECT_BINARY_DIR}/callguard.pc")
if(CALLGUARD_WITH_REDIS)
  configure_file("${PROJECT_SOURCE_DIR}/cmake/callguard-redis.pc.in"
                 "${PROJECT_BINARY_DIR}/callguard-redis.pc" @ONLY)
  list(APPEND _cg_pc_files "${PROJECT_BINARY_DIR}/callguard-redis.pc")
endif()
install(FILES ${_cg_pc_files} DESTINATION "${_cg_pc_install_dir}")
