// Limiter throughput and latency, one body per operation, registered once per backend:
//   acquire+release pairs, acquire at capacity (rejections), status, and pairs while N slots
//   are held (does the cost stay flat as the set grows?).
// The memory backend is the baseline. With CALLGUARD_BENCH_REDIS and REDIS_URL set, every body
// also runs over the Redis backend against that server (bench/compare.sh starts one).
#include <callguard/callguard.hpp>
#ifdef CALLGUARD_BENCH_REDIS
#include <callguard/async.hpp>
#include <callguard/backends/redis.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#endif

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

callguard::limiter_config bench_config(std::int64_t cap) {
    callguard::limiter_config c;
    c.max_active_calls = cap;
    c.log_level = callguard::log_level::error;
    return c;
}

std::string call_id(int thread, std::int64_t i) { return fmt::format("CA{:08x}{:024x}", thread, i); }

/// 4096 Twilio-shaped ids for one thread, made before the timed loop.
std::vector<std::string> call_ids(int thread) {
    std::vector<std::string> ids;
    for (std::int64_t i = 0; i < 4096; ++i) ids.push_back(call_id(thread, i));
    return ids;
}

/// Backends by name, each made fresh for one benchmark run.
struct memory_maker {
    static constexpr const char* name = "memory";
    static constexpr std::size_t sample_mask = 63; // time one acquire in 64
    static callguard::memory_backend make(std::string_view) { return {}; }
};

#ifdef CALLGUARD_BENCH_REDIS
/// The default multiplexed mode ("redis"), and the pool ("redis_pooled") with one connection
/// per caller, like redis-benchmark's -c.
template <callguard::redis_connection_mode Mode>
struct redis_maker {
    static constexpr const char* name =
        Mode == callguard::redis_connection_mode::multiplexed ? "redis" : "redis_pooled";
    static constexpr std::size_t sample_mask = 0; // a round trip dwarfs the clock: time them all
    static callguard::redis_backend make(std::string_view run) {
        auto o = callguard::redis_options::from_env();
        o.key_prefix = fmt::format("bench-{}", run);
        o.connection_mode = Mode;
        o.pool_size = 64;
        if (const char* n = std::getenv("CALLGUARD_BENCH_SOCKETS")) o.multiplexed_connections = std::atoi(n);
        o.command_timeout = o.connect_timeout = std::chrono::milliseconds(2000);
        return callguard::redis_backend(std::move(o));
    }
    /// Fills the set with `n` live slots in one server-side loop (acquiring a million slots one
    /// round trip at a time would take most of a minute).
    static void prefill(std::string_view run, std::int64_t n) {
        const auto o = callguard::redis_options::from_env();
        const timeval long_wait{120, 0}; // one script adds them all
        redisContext* c = o.unix_socket.empty() ? redisConnectWithTimeout(o.host.c_str(), o.port, long_wait)
                                                : redisConnectUnixWithTimeout(o.unix_socket.c_str(), long_wait);
        if (!c || c->err) throw std::runtime_error("prefill: cannot connect to Redis");
        redisSetTimeout(c, long_wait);
        const auto key = fmt::format("{{bench-{}}}:active", run);
        const auto count = std::to_string(n);
        const char* argv[] = {"EVAL",
                              "local t = redis.call('TIME'); local exp = tonumber(t[1]) * 1000 + 7200000;"
                              "for i = 1, tonumber(ARGV[1]) do redis.call('ZADD', KEYS[1], exp, 'held-' .. i) end;"
                              "redis.call('PEXPIRE', KEYS[1], 7200000); return 1",
                              "1", key.c_str(), count.c_str()};
        if (auto* r = redisCommandArgv(c, 5, argv, nullptr)) freeReplyObject(r);
        redisFree(c);
    }
};
#endif

/// One limiter shared by all threads of a run; thread 0 builds it before the timed loop
/// (Google Benchmark starts every thread's loop together, after that).
template <class Maker>
struct shared {
    using limiter = callguard::capacity_limiter<decltype(Maker::make(""))>;
    static inline std::unique_ptr<limiter> instance;
    static inline std::atomic<int> runs{0};

    static void reset(std::int64_t cap, std::int64_t held) {
        instance.reset();
        const auto run = std::to_string(runs++);
        instance = std::make_unique<limiter>(Maker::make(run), bench_config(cap),
                                             callguard::limiter_hooks{callguard::null_sink(), {}});
        if constexpr (requires { Maker::prefill(run, held); }) {
            if (held > 0) Maker::prefill(run, held);
        } else {
            for (std::int64_t i = 0; i < held; ++i) instance->acquire(call_id(-1, i));
        }
    }
};

/// Per-thread latency samples turned into p50/p99 counters (microseconds).
class latencies {
public:
    explicit latencies(std::size_t reserve) { samples_.reserve(reserve); }
    void add(std::chrono::steady_clock::duration d) {
        if (samples_.size() < samples_.capacity()) samples_.push_back(d.count());
    }
    void report(benchmark::State& state, const char* what) {
        if (samples_.empty()) return;
        std::sort(samples_.begin(), samples_.end());
        auto at = [&](double q) {
            auto idx = static_cast<std::size_t>(q * static_cast<double>(samples_.size() - 1));
            return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::duration(samples_[idx])).count();
        };
        state.counters[fmt::format("{}_p50_us", what)] = benchmark::Counter(at(0.50), benchmark::Counter::kAvgThreads);
        state.counters[fmt::format("{}_p99_us", what)] = benchmark::Counter(at(0.99), benchmark::Counter::kAvgThreads);
    }

private:
    std::vector<std::chrono::steady_clock::rep> samples_;
};

template <class Maker>
void acquire_release(benchmark::State& state) {
    const std::int64_t held = state.range(0);
    if (state.thread_index() == 0) shared<Maker>::reset(held + 1'000'000, held);
    latencies lat(1 << 20);
    const auto ids = call_ids(state.thread_index());
    std::size_t i = 0;
    for (auto _ : state) {
        auto& l = *shared<Maker>::instance;
        const auto& id = ids[i++ & 4095];
        if (((i - 1) & Maker::sample_mask) == 0) { // sampled: clock reads would dominate a memory pair
            auto t0 = std::chrono::steady_clock::now();
            benchmark::DoNotOptimize(l.acquire(id));
            lat.add(std::chrono::steady_clock::now() - t0);
        } else {
            benchmark::DoNotOptimize(l.acquire(id));
        }
        benchmark::DoNotOptimize(l.release(id));
    }
    lat.report(state, "acquire");
    state.counters["pairs/s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                   benchmark::Counter::kIsRate);
}

template <class Maker>
void acquire_at_capacity(benchmark::State& state) {
    if (state.thread_index() == 0) shared<Maker>::reset(15, 15);
    const auto ids = call_ids(state.thread_index());
    std::size_t i = 0;
    for (auto _ : state) benchmark::DoNotOptimize(shared<Maker>::instance->acquire(ids[i++ & 4095]));
    state.counters["rejections/s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                        benchmark::Counter::kIsRate);
}

template <class Maker>
void status(benchmark::State& state) {
    if (state.thread_index() == 0) shared<Maker>::reset(15, 8);
    for (auto _ : state) benchmark::DoNotOptimize(shared<Maker>::instance->status());
    state.counters["status/s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                    benchmark::Counter::kIsRate);
}

template <class Maker>
void register_all(const std::vector<int>& threads, std::int64_t max_held) {
    auto reg = [&](const char* op, auto fn) {
        auto* b = benchmark::RegisterBenchmark(fmt::format("{}/{}", op, Maker::name).c_str(), fn);
        b->UseRealTime();
        for (int t : threads) b->Threads(t);
        return b;
    };
    reg("acquire_release", acquire_release<Maker>)->Arg(0);
    reg("acquire_at_capacity", acquire_at_capacity<Maker>);
    reg("status", status<Maker>);
    auto* held = benchmark::RegisterBenchmark(fmt::format("acquire_release_held/{}", Maker::name).c_str(),
                                              acquire_release<Maker>);
    held->UseRealTime()->Threads(1);
    for (std::int64_t n : {15LL, 1000LL, 100'000LL, 1'000'000LL})
        if (n <= max_held) held->Arg(n);
}

#ifdef CALLGUARD_BENCH_REDIS
/// The async API: `callers` coroutines on one io_context thread (the benchmark's own), over a
/// Redis backend on that io_context, each doing acquire+release pairs one after the other; one
/// benchmark iteration is one pair. Registered as `acquire_release_async/redis/<callers>`.
void acquire_release_async(benchmark::State& state) {
    namespace asio = boost::asio;
    const int callers = static_cast<int>(state.range(0));
    asio::io_context ioc(1);
    auto o = callguard::redis_options::from_env();
    o.key_prefix = fmt::format("bench-async-{}", callers);
    o.command_timeout = o.connect_timeout = std::chrono::milliseconds(2000);
    callguard::capacity_limiter<callguard::redis_backend> l(callguard::redis_backend(ioc.get_executor(), o),
                                                             bench_config(1'000'000), {callguard::null_sink(), {}});
    latencies lat(1 << 20);
    std::int64_t left = 0; // pairs still to do in this round, shared by the coroutines (one thread)
    std::vector<std::vector<std::string>> ids;
    for (int w = 0; w < callers; ++w) ids.push_back(call_ids(w));
    auto worker = [&](int w) -> asio::awaitable<void> {
        const auto& mine = ids[static_cast<std::size_t>(w)];
        for (std::size_t i = 0; left > 0; ++i) {
            --left;
            const auto& id = mine[i & 4095];
            const auto t0 = std::chrono::steady_clock::now();
            benchmark::DoNotOptimize(co_await callguard::async_acquire(l, id, asio::use_awaitable));
            lat.add(std::chrono::steady_clock::now() - t0);
            benchmark::DoNotOptimize(co_await callguard::async_release(l, id, asio::use_awaitable));
        }
    };
    // Warm: the connection and the scripts, outside the measurement.
    left = callers;
    for (int w = 0; w < callers; ++w) asio::co_spawn(ioc, worker(w), asio::detached);
    ioc.run();
    // Rounds of 64 pairs per caller: the coroutines stay busy together, with no barrier per pair.
    constexpr std::int64_t per_caller = 64;
    while (state.KeepRunningBatch(callers * per_caller)) {
        left = callers * per_caller;
        ioc.restart();
        for (int w = 0; w < callers; ++w) asio::co_spawn(ioc, worker(w), asio::detached);
        ioc.run();
    }
    lat.report(state, "acquire");
    state.counters["pairs/s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                   benchmark::Counter::kIsRate);
}
#endif

} // namespace

int main(int argc, char** argv) {
#ifdef CALLGUARD_BENCH_REDIS
    // bench/compare.sh loads our acquire script into redis-benchmark with this.
    if (argc == 2 && std::string_view(argv[1]) == "--print-acquire-script") {
        fmt::print("{}", callguard::detail::lua::acquire);
        return 0;
    }
#endif
    register_all<memory_maker>({1, 2}, 1'000'000);
#ifdef CALLGUARD_BENCH_REDIS
    if (std::getenv("REDIS_URL")) {
        const char* max_held = std::getenv("CALLGUARD_BENCH_MAX_HELD");
        const std::int64_t held = max_held ? std::atoll(max_held) : 1'000'000;
        register_all<redis_maker<callguard::redis_connection_mode::multiplexed>>({1, 2, 16, 64}, held);
        register_all<redis_maker<callguard::redis_connection_mode::pooled>>({1, 2, 16, 64}, held);
        auto* async = benchmark::RegisterBenchmark("acquire_release_async/redis", acquire_release_async);
        async->UseRealTime();
        for (int callers : {1, 16, 64}) async->Arg(callers);
    }
#endif
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
}
