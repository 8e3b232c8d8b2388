// The release replay queue: bounded, de-duplicated, drained in batches.

#include <callguard/detail/replay_queue.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <string>

using callguard::detail::replay_queue;
using kept = replay_queue::keep_result;

TEST_CASE("replay queue: a release repeated while the backend is down is kept once") {
    replay_queue q(10);
    CHECK(q.empty());
    CHECK(q.keep("CA1") == kept::kept);
    CHECK(q.keep("CA1") == kept::duplicate);
    CHECK(q.keep("CA2") == kept::kept);
    CHECK(q.size() == 2);
    auto batch = q.take(10);
    std::sort(batch.begin(), batch.end());
    CHECK(batch == std::vector<std::string>{"CA1", "CA2"});
    CHECK(q.empty());
    CHECK(q.keep("CA1") == kept::kept); // taken out, so it can be kept again
}

TEST_CASE("replay queue: past its bound it drops, and says so once per overflow") {
    replay_queue q(3);
    for (auto id : {"a", "b", "c"}) CHECK(q.keep(id) == kept::kept);
    CHECK(q.keep("d") == kept::first_drop);
    CHECK(q.keep("e") == kept::dropped);
    CHECK(q.keep("a") == kept::duplicate); // already there: not a drop
    CHECK(q.size() == 3);
    CHECK(q.bound() == 3);

    auto one = q.take(1); // room again: the next overflow is reported again
    CHECK(one.size() == 1);
    CHECK(q.keep("f") == kept::kept);
    CHECK(q.keep("g") == kept::first_drop);
}

TEST_CASE("replay queue: taken in batches, nothing lost or repeated") {
    replay_queue q(1000);
    for (int i = 0; i < 150; ++i) REQUIRE(q.keep("CA" + std::to_string(i)) == kept::kept);
    std::set<std::string> seen;
    for (std::size_t expect : {64u, 64u, 22u, 0u}) {
        auto batch = q.take(64);
        CHECK(batch.size() == expect);
        for (auto& id : batch) CHECK(seen.insert(id).second);
    }
    CHECK(seen.size() == 150);
    CHECK(q.empty());
}
