#pragma once

// One real three-master Redis Cluster per test process, and a contract fixture over it.

#include "../support/redis_topologies.hpp"
#include "redis_fixture.hpp"

namespace test {

inline cluster_group& shared_cluster() {
    static cluster_group cluster; // made on first use, killed at exit
    return cluster;
}

/// Contract fixture: each backend a `redis+cluster://` URL naming all three nodes; the key
/// prefix (so the hash slot, so the node) differs from fixture to fixture.
struct redis_cluster_fixture {
    using backend_type = callguard::redis_backend;
    std::string prefix = unique_prefix("contract-cluster");
    backend_type make_backend() { return backend_type(shared_cluster().url(), prefix); }
};

} // namespace test
