#include "../contract/limiter_contract.hpp"
#include "redis_fixture.hpp"

CALLGUARD_LIMITER_CONTRACT(test::redis_fixture);
