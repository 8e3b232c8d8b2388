#include "../contract/limiter_contract.hpp"
#include "../contract/waiting_room_contract.hpp"
#include "../contract/claim_contract.hpp"
#include "redis_fixture.hpp"

CALLGUARD_LIMITER_CONTRACT(test::redis_fixture);
CALLGUARD_WAITING_ROOM_CONTRACT(test::redis_fixture);
CALLGUARD_CLAIM_CONTRACT(test::redis_fixture);
