#include "../contract/limiter_contract.hpp"
#include "../contract/waiting_room_contract.hpp"
#include "../contract/claim_contract.hpp"
#include "cluster_fixture.hpp"

// The whole contract over a real three-master Redis Cluster.
CALLGUARD_LIMITER_CONTRACT(test::redis_cluster_fixture);
CALLGUARD_WAITING_ROOM_CONTRACT(test::redis_cluster_fixture);
CALLGUARD_CLAIM_CONTRACT(test::redis_cluster_fixture);
