#include "disk/index.h"

#include <functional>

#include "util/path.h"

namespace layercache {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS entries (
  digest TEXT PRIMARY KEY,
  model_id TEXT NOT NULL,
  layer_index INTEGER NOT NULL,
  quantization_mode TEXT NOT NULL,
  revision TEXT NOT NULL,
  size INTEGER NOT NULL,
  data_bytes INTEGER NOT NULL,
  created_ns INTEGER NOT NULL,
  last_access_ns INTEGER NOT NULL,
  checksum_algorithm TEXT NOT NULL,
  checksum TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_access ON entries(last_access_ns);
CREATE INDEX IF NOT EXISTS entries_by_model ON entries(model_id, layer_index);
CREATE TABLE IF NOT EXISTS reservations (
  digest TEXT PRIMARY KEY,
  size INTEGER NOT NULL
);
)sql";

constexpr const char* kColumns =
    "digest, model_id, layer_index, quantization_mode, revision, size, data_bytes, created_ns, "
    "last_access_ns, checksum_algorithm, checksum";

struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

std::string Text(sqlite3_stmt* s, int col) {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, col));
  return p == nullptr ? std::string()
                      : std::string(p, static_cast<size_t>(sqlite3_column_bytes(s, col)));
}

void BindText(sqlite3_stmt* s, int idx, const std::string& v) {
  sqlite3_bind_text(s, idx, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}

IndexRow ReadRow(sqlite3_stmt* s) {
  IndexRow r;
  r.digest = Text(s, 0);
  r.key.model_id = Text(s, 1);
  r.key.layer_index = sqlite3_column_int64(s, 2);
  r.key.quantization_mode = Text(s, 3);
  r.key.revision = Text(s, 4);
  r.size = static_cast<uint64_t>(sqlite3_column_int64(s, 5));
  r.data_bytes = static_cast<uint64_t>(sqlite3_column_int64(s, 6));
  r.created_ns = sqlite3_column_int64(s, 7);
  r.last_access_ns = sqlite3_column_int64(s, 8);
  r.checksum_algorithm = Text(s, 9);
  r.checksum = Text(s, 10);
  return r;
}

}  // namespace

Result<std::unique_ptr<Index>> Index::Open(const std::string& path, bool network_fs, Env* env) {
  if (env == nullptr) env = Env::Default();
  sqlite3* db = nullptr;
  if (path != ":memory:") {
    // Created here with 0666 & ~umask (SQLite would use 0644; its WAL and
    // shm files copy the database's mode): with umask 002 a group shares it.
    // A new file's name is made durable at once. When this fails (the file
    // exists, a read-only directory) SQLite opens or reports it below.
    auto created = env->CreateNew(path);
    if (created.ok() && (*created)->Close().ok()) (void)env->SyncDir(DirName(path));
  }
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           path == ":memory:" ? nullptr : env->sqlite_vfs());
  if (rc != SQLITE_OK) {
    std::string msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return Status::IOError("cannot open index " + path + ": " + msg);
  }
  std::unique_ptr<Index> index(new Index(db));
  sqlite3_busy_timeout(db, 60'000);
  const bool in_memory = path == ":memory:";
  auto corrupt = [&](const Status& s) {
    return Status::Corruption("index " + path + " is unusable: " + s.message());
  };
  if (!in_memory && network_fs) {
    // WAL needs memory shared by every process that opens the database: not
    // across hosts. The rollback journal works on network file systems (with
    // working POSIX locks), fsyncing at each commit.
    if (Status s = index->Exec("PRAGMA journal_mode=DELETE"); !s.ok()) return corrupt(s);
    if (Status s = index->Exec("PRAGMA synchronous=FULL"); !s.ok()) return corrupt(s);
  } else if (!in_memory) {
    if (Status s = index->Exec("PRAGMA journal_mode=WAL"); !s.ok()) return corrupt(s);
    if (Status s = index->Exec("PRAGMA synchronous=NORMAL"); !s.ok()) return corrupt(s);
  }
  {
    Stmt st;
    if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st.s, nullptr) != SQLITE_OK ||
        sqlite3_step(st.s) != SQLITE_ROW || Text(st.s, 0) != "ok") {
      return corrupt(index->Error("quick_check failed"));
    }
  }
  if (Status s = index->Exec(kSchema); !s.ok()) return corrupt(s);
  // A table with the right name but the wrong columns is as bad as none.
  {
    Stmt st;
    std::string probe = std::string("SELECT ") + kColumns + " FROM entries LIMIT 1";
    if (sqlite3_prepare_v2(db, probe.c_str(), -1, &st.s, nullptr) != SQLITE_OK) {
      return corrupt(index->Error("unexpected schema"));
    }
  }
  return index;
}

Index::~Index() { sqlite3_close_v2(db_); }

Status Index::Error(const char* what) const {
  return Status::IOError(std::string(what) + ": " + sqlite3_errmsg(db_));
}

Status Index::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    return Status::IOError("index: " + msg);
  }
  return Status::OK();
}

Status Index::Begin() { return Exec("BEGIN IMMEDIATE"); }
Status Index::Commit() { return Exec("COMMIT"); }
void Index::Rollback() { (void)Exec("ROLLBACK"); }

Status Index::Upsert(const IndexRow& r) {
  Stmt st;
  std::string sql = std::string("INSERT OR REPLACE INTO entries (") + kColumns +
                    ") VALUES (?,?,?,?,?,?,?,?,?,?,?)";
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st.s, nullptr) != SQLITE_OK)
    return Error("index upsert");
  BindText(st.s, 1, r.digest);
  BindText(st.s, 2, r.key.model_id);
  sqlite3_bind_int64(st.s, 3, r.key.layer_index);
  BindText(st.s, 4, r.key.quantization_mode);
  BindText(st.s, 5, r.key.revision);
  sqlite3_bind_int64(st.s, 6, static_cast<int64_t>(r.size));
  sqlite3_bind_int64(st.s, 7, static_cast<int64_t>(r.data_bytes));
  sqlite3_bind_int64(st.s, 8, r.created_ns);
  sqlite3_bind_int64(st.s, 9, r.last_access_ns);
  BindText(st.s, 10, r.checksum_algorithm);
  BindText(st.s, 11, r.checksum);
  if (sqlite3_step(st.s) != SQLITE_DONE) return Error("index upsert");
  return Status::OK();
}

Status Index::Touch(const std::string& digest, int64_t now_ns) {
  Stmt st;
  if (sqlite3_prepare_v2(db_, "UPDATE entries SET last_access_ns=? WHERE digest=?", -1, &st.s,
                         nullptr) != SQLITE_OK) {
    return Error("index touch");
  }
  sqlite3_bind_int64(st.s, 1, now_ns);
  BindText(st.s, 2, digest);
  if (sqlite3_step(st.s) != SQLITE_DONE) return Error("index touch");
  return Status::OK();
}

Status Index::Delete(const std::string& digest) {
  Stmt st;
  if (sqlite3_prepare_v2(db_, "DELETE FROM entries WHERE digest=?", -1, &st.s, nullptr) !=
      SQLITE_OK) {
    return Error("index delete");
  }
  BindText(st.s, 1, digest);
  if (sqlite3_step(st.s) != SQLITE_DONE) return Error("index delete");
  return Status::OK();
}

Result<std::vector<IndexRow>> Index::Query(const std::string& sql,
                                           const std::function<void(sqlite3_stmt*)>& bind) {
  Stmt st;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st.s, nullptr) != SQLITE_OK)
    return Error("index query");
  bind(st.s);
  std::vector<IndexRow> rows;
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) rows.push_back(ReadRow(st.s));
  if (rc != SQLITE_DONE) return Error("index query");
  return rows;
}

Result<std::optional<IndexRow>> Index::Get(const std::string& digest) {
  auto rows = Query(std::string("SELECT ") + kColumns + " FROM entries WHERE digest=?",
                    [&](sqlite3_stmt* s) { BindText(s, 1, digest); });
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return std::optional<IndexRow>();
  return std::optional<IndexRow>(std::move(rows->front()));
}

Result<std::vector<IndexRow>> Index::All() {
  return Query(std::string("SELECT ") + kColumns + " FROM entries ORDER BY last_access_ns DESC",
               [](sqlite3_stmt*) {});
}

Result<std::vector<IndexRow>> Index::Match(const std::optional<std::string>& model_id,
                                           const std::optional<int64_t>& layer_index) {
  std::string sql = std::string("SELECT ") + kColumns + " FROM entries";
  if (model_id) sql += layer_index ? " WHERE model_id=? AND layer_index=?" : " WHERE model_id=?";
  return Query(sql, [&](sqlite3_stmt* s) {
    if (model_id) {
      BindText(s, 1, *model_id);
      if (layer_index) sqlite3_bind_int64(s, 2, *layer_index);
    }
  });
}

Result<std::vector<IndexRow>> Index::Oldest(size_t limit, const std::string& exclude_digest) {
  return Query(std::string("SELECT ") + kColumns +
                   " FROM entries WHERE digest<>? ORDER BY last_access_ns ASC LIMIT ?",
               [&](sqlite3_stmt* s) {
                 BindText(s, 1, exclude_digest);
                 sqlite3_bind_int64(s, 2, static_cast<int64_t>(limit));
               });
}

Result<std::vector<IndexRow>> Index::Newest(size_t limit, const std::string& exclude_digest) {
  return Query(std::string("SELECT ") + kColumns +
                   " FROM entries WHERE digest<>? ORDER BY last_access_ns DESC LIMIT ?",
               [&](sqlite3_stmt* s) {
                 BindText(s, 1, exclude_digest);
                 sqlite3_bind_int64(s, 2, static_cast<int64_t>(limit));
               });
}

Status Index::Reserve(const std::string& digest, uint64_t size) {
  Stmt st;
  if (sqlite3_prepare_v2(db_, "INSERT OR REPLACE INTO reservations (digest, size) VALUES (?,?)", -1,
                         &st.s, nullptr) != SQLITE_OK) {
    return Error("index reserve");
  }
  BindText(st.s, 1, digest);
  sqlite3_bind_int64(st.s, 2, static_cast<int64_t>(size));
  if (sqlite3_step(st.s) != SQLITE_DONE) return Error("index reserve");
  return Status::OK();
}

Status Index::Unreserve(const std::string& digest) {
  Stmt st;
  if (sqlite3_prepare_v2(db_, "DELETE FROM reservations WHERE digest=?", -1, &st.s, nullptr) !=
      SQLITE_OK) {
    return Error("index unreserve");
  }
  BindText(st.s, 1, digest);
  if (sqlite3_step(st.s) != SQLITE_DONE) return Error("index unreserve");
  return Status::OK();
}

Result<std::vector<std::pair<std::string, uint64_t>>> Index::Reservations() {
  Stmt st;
  if (sqlite3_prepare_v2(db_, "SELECT digest, size FROM reservations", -1, &st.s, nullptr) !=
      SQLITE_OK) {
    return Error("index reservations");
  }
  std::vector<std::pair<std::string, uint64_t>> out;
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW)
    out.emplace_back(Text(st.s, 0), static_cast<uint64_t>(sqlite3_column_int64(st.s, 1)));
  if (rc != SQLITE_DONE) return Error("index reservations");
  return out;
}

Result<IndexTotals> Index::Totals() {
  Stmt st;
  if (sqlite3_prepare_v2(
          db_, "SELECT COUNT(*), COALESCE(SUM(size),0), COALESCE(SUM(data_bytes),0) FROM entries",
          -1, &st.s, nullptr) != SQLITE_OK ||
      sqlite3_step(st.s) != SQLITE_ROW) {
    return Error("index totals");
  }
  return IndexTotals{static_cast<uint64_t>(sqlite3_column_int64(st.s, 0)),
                     static_cast<uint64_t>(sqlite3_column_int64(st.s, 1)),
                     static_cast<uint64_t>(sqlite3_column_int64(st.s, 2))};
}

Status Index::Compact() {
  Status s = Exec("VACUUM");
  Status c = Exec("PRAGMA wal_checkpoint(TRUNCATE)");
  return s.ok() ? c : s;
}

}  // namespace layercache
