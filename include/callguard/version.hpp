#pragma once

/// The one place the version lives; CMake parses these three lines.
#define CALLGUARD_VERSION_MAJOR 0
#define CALLGUARD_VERSION_MINOR 1
#define CALLGUARD_VERSION_PATCH 0

#define CALLGUARD_VERSION                                                                \
    (CALLGUARD_VERSION_MAJOR * 10000 + CALLGUARD_VERSION_MINOR * 100 + CALLGUARD_VERSION_PATCH)
