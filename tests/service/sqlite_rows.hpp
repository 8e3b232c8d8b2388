#pragma once

// Reads a service's SQLite call log (the file it writes) with the sqlite3 C API: each row as
// its columns joined by '|', NULL as "NULL".

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <string>
#include <vector>

namespace svc {

inline std::vector<std::string> sqlite_rows(const std::string& path, const std::string& sql) {
    sqlite3* db = nullptr;
    std::vector<std::string> rows;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
        sqlite3_close(db);
        return rows; // not created yet
    }
    sqlite3_busy_timeout(db, 2000);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            std::string row;
            for (int j = 0; j < sqlite3_column_count(st); ++j) {
                if (j) row += '|';
                const auto* v = sqlite3_column_text(st, j);
                row += v ? reinterpret_cast<const char*>(v) : "NULL";
            }
            rows.push_back(row);
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rows;
}

} // namespace svc
