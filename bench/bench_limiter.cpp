// Limiter throughput over the in-memory backend: acquire+release pairs, rejections at the cap,
// and status. One body per operation, registered per backend and thread count.
#include <callguard/callguard.hpp>

#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <vector>

namespace {

using memory_limiter = callguard::capacity_limiter<callguard::memory_backend>;

callguard::limiter_config bench_config(std::int64_t cap) {
    callguard::limiter_config c;
    c.max_active_calls = cap;
    c.log_level = callguard::log_level::warning;
    return c;
}

/// Shared by all threads of one run; rebuilt when thread 0 starts a run.
template <class Limiter>
struct shared_limiter {
    static inline std::unique_ptr<Limiter> instance;
};

std::vector<std::string> call_ids(int thread, int n) {
    std::vector<std::string> ids;
    ids.reserve(n);
    for (int i = 0; i < n; ++i) ids.push_back(fmt::format("CA{:08x}{:024x}", thread, i));
    return ids;
}

void BM_memory_acquire_release(benchmark::State& state) {
    if (state.thread_index() == 0)
        shared_limiter<memory_limiter>::instance = std::make_unique<memory_limiter>(
            callguard::memory_backend{}, bench_config(1'000'000), callguard::limiter_hooks{callguard::null_sink(), {}});
    auto ids = call_ids(state.thread_index(), 1024);
    std::size_t i = 0;
    for (auto _ : state) {
        auto& l = *shared_limiter<memory_limiter>::instance;
        const auto& id = ids[i++ & 1023];
        benchmark::DoNotOptimize(l.acquire(id));
        benchmark::DoNotOptimize(l.release(id));
    }
    state.SetItemsProcessed(state.iterations());
    state.counters["pairs/s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                   benchmark::Counter::kIsRate);
}

void BM_memory_acquire_at_capacity(benchmark::State& state) {
    if (state.thread_index() == 0) {
        shared_limiter<memory_limiter>::instance = std::make_unique<memory_limiter>(
            callguard::memory_backend{}, bench_config(15), callguard::limiter_hooks{callguard::null_sink(), {}});
        for (int i = 0; i < 15; ++i) shared_limiter<memory_limiter>::instance->acquire("held" + std::to_string(i));
    }
    auto ids = call_ids(state.thread_index(), 1024);
    std::size_t i = 0;
    for (auto _ : state)
        benchmark::DoNotOptimize(shared_limiter<memory_limiter>::instance->acquire(ids[i++ & 1023]));
    state.SetItemsProcessed(state.iterations());
}

void BM_memory_status(benchmark::State& state) {
    if (state.thread_index() == 0)
        shared_limiter<memory_limiter>::instance = std::make_unique<memory_limiter>(
            callguard::memory_backend{}, bench_config(15), callguard::limiter_hooks{callguard::null_sink(), {}});
    for (auto _ : state) benchmark::DoNotOptimize(shared_limiter<memory_limiter>::instance->status());
    state.SetItemsProcessed(state.iterations());
}

} // namespace

BENCHMARK(BM_memory_acquire_release)->UseRealTime()->Threads(1)->Threads(2);
BENCHMARK(BM_memory_acquire_at_capacity)->UseRealTime()->Threads(1)->Threads(2);
BENCHMARK(BM_memory_status)->UseRealTime()->Threads(1);

BENCHMARK_MAIN();
