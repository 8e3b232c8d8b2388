#include "contract/limiter_contract.hpp"
#include "contract/waiting_room_contract.hpp"
#include "contract/claim_contract.hpp"

#include <callguard/backends/memory.hpp>

namespace {

/// Every backend made by one fixture shares the fixture's storage (memory_backend copies do).
struct memory_fixture {
    using backend_type = callguard::memory_backend;
    callguard::memory_backend storage;
    backend_type make_backend() { return storage; }
};

} // namespace

CALLGUARD_LIMITER_CONTRACT(memory_fixture);
CALLGUARD_WAITING_ROOM_CONTRACT(memory_fixture);
CALLGUARD_CLAIM_CONTRACT(memory_fixture);
