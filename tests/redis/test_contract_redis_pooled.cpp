#include "../contract/limiter_contract.hpp"
#include "../contract/waiting_room_contract.hpp"
#include "../contract/claim_contract.hpp"
#include "redis_fixture.hpp"

// The contract again over the pooled connection mode (the default mode has its own binary).
CALLGUARD_LIMITER_CONTRACT(test::redis_pooled_fixture);
CALLGUARD_WAITING_ROOM_CONTRACT(test::redis_pooled_fixture);
CALLGUARD_CLAIM_CONTRACT(test::redis_pooled_fixture);
