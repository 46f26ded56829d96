// Catch2 v2's main(), compiled into each test binary.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
