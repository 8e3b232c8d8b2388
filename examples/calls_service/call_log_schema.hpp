#pragma once

// What the call log's tables mean, shared by every store: the schema versions, the rule for a
// second row about the same call, the time format, and the migration procedure. Each store writes
// its own SQL for its own dialect; the meaning lives here once.

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <span>
#include <string>
#include <string_view>

namespace calls::schema {

/// The table that records which migrations ran (one row per version).
inline constexpr std::string_view version_table = "callguard_schema_version";

/// Migration steps, in order; a store has exactly one list of statements per step. A new column
/// (the WhatsApp sender's, say) is one more step here and in each store.
struct step {
    int version;
    std::string_view description;
};
inline constexpr std::array steps{
    step{1, "calls and whatsapp_outbox as the single-instance log wrote them"},
    step{2, "fleet log: event times, one outbox row per call, sender and recording columns, analyst indexes"},
    step{3, "recording status of a voicemail, error message of the WhatsApp sender"},
};
inline constexpr int latest_version = steps.back().version;

/// A step's description is written into SQL as a string literal.
constexpr bool descriptions_are_plain() {
    for (const auto& s : steps)
        for (char c : s.description)
            if (c == '\'' || c == '\\') return false;
    return true;
}
static_assert(descriptions_are_plain(), "no quotes or backslashes in a migration step's description");

/// A status change an existing `calls` row accepts; every other second row about a call leaves
/// the status as it is, so a retried webhook does not reopen a call and a rejected call's final
/// status callback keeps it rejected. `completed -> rejected_*` exists because two instances
/// queue separately: the status callback can reach the database before the rejection it ends.
/// A caller in the waiting room is `queued` until it is admitted, let go (`rejected_capacity`),
/// or hangs up (`completed`); a voicemail left after any of those is the call's last word.
struct transition {
    std::string_view from, to;
};
inline constexpr std::array status_transitions{
    transition{"admitted", "completed"},
    transition{"completed", "rejected_capacity"},
    transition{"completed", "rejected_unavailable"},
    transition{"queued", "admitted"},
    transition{"queued", "rejected_capacity"},
    transition{"queued", "rejected_unavailable"},
    transition{"queued", "completed"},
    transition{"queued", "voicemail"},
    transition{"rejected_capacity", "voicemail"},
    transition{"rejected_unavailable", "voicemail"},
    transition{"completed", "voicemail"},
};

/// The status a row ends with when `incoming` arrives for a row holding `existing`.
constexpr std::string_view merged_status(std::string_view existing, std::string_view incoming) {
    for (const auto& t : status_transitions)
        if (existing == t.from && incoming == t.to) return incoming;
    return existing;
}

/// The SQL condition "the incoming row changes the status", over the existing row `old` and the
/// proposed row `excluded` (the name both SQLite and PostgreSQL give it in ON CONFLICT).
inline std::string status_changes(std::string_view old) {
    std::string sql = "(";
    for (const auto& t : status_transitions) {
        if (sql.size() > 1) sql += " OR ";
        sql += "(";
        sql += old;
        sql += ".status = '";
        sql += t.from;
        sql += "' AND excluded.status = '";
        sql += t.to;
        sql += "')";
    }
    return sql + ")";
}

/// The SET list of `calls`' upsert, valid on both databases: the status per the transitions
/// above (`updated_at` moves with it), the decision's tenant and counts kept whichever row
/// came first, and a recording's fields as the latest row that has them says. Each store adds `created_at` = the earlier of the two in its own dialect.
inline std::string calls_conflict_update(std::string_view old) {
    const auto changes = status_changes(old);
    std::string o(old);
    return "status = CASE WHEN " + changes + " THEN excluded.status ELSE " + o + ".status END, " +
           "updated_at = CASE WHEN " + changes + " THEN excluded.updated_at ELSE " + o + ".updated_at END, " +
           "tenant = COALESCE(" + o + ".tenant, excluded.tenant), " +
           "active = COALESCE(" + o + ".active, excluded.active), " +
           "max = COALESCE(" + o + ".max, excluded.max), " +
           // A recording's fields: the latest row that knows one wins.
           "recording_url = COALESCE(excluded.recording_url, " + o + ".recording_url), " +
           "recording_duration = COALESCE(excluded.recording_duration, " + o + ".recording_duration), " +
           "recording_sid = COALESCE(excluded.recording_sid, " + o + ".recording_sid), " +
           "recording_status = COALESCE(excluded.recording_status, " + o + ".recording_status)";
}

/// UTC, millisecond precision, ISO 8601 with `Z`: SQLite stores it as text (it sorts in time
/// order), PostgreSQL reads it into `timestamptz`.
inline std::string format_time(std::chrono::system_clock::time_point t) {
    using namespace std::chrono;
    const auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
    const auto secs = static_cast<std::time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    const auto frac = static_cast<int>(ms - static_cast<std::int64_t>(secs) * 1000);
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    char buf[32];
    const auto n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    char out[40];
    std::snprintf(out, sizeof out, "%.*s.%03dZ", static_cast<int>(n), buf, frac);
    return out;
}

/// Brings a database to `latest_version`, once, even with several instances starting together.
/// `Db` provides:
///   void lock();                         begin a transaction that excludes other migrators
///   void exec(std::string_view sql);     run statements (throws on error)
///   int query_int(std::string_view sql); first column of the first row (0 when none/NULL)
///   void commit(); void rollback() noexcept;
///   std::span<const std::string_view> migration(int version);   the store's statements
///   std::string_view version_table_ddl();                       CREATE TABLE IF NOT EXISTS ...
/// Returns the version found before migrating (0: a new database, or one from before versioning).
template <class Db>
int migrate(Db& db) {
    db.lock();
    try {
        db.exec(db.version_table_ddl());
        const int found = db.query_int("SELECT max(version) FROM " + std::string(version_table));
        for (const auto& s : steps) {
            if (s.version <= found) continue;
            for (auto sql : db.migration(s.version)) db.exec(sql);
            db.exec("INSERT INTO " + std::string(version_table) + " (version, description) VALUES (" +
                    std::to_string(s.version) + ", '" + std::string(s.description) + "')");
        }
        db.commit();
        return found;
    } catch (...) {
        db.rollback();
        throw;
    }
}

} // namespace calls::schema
