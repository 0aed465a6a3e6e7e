//! Metadata store on sea-orm (SQLite by default, PostgreSQL at scale)
