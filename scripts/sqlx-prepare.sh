#!/usr/bin/env bash
# Regenerates `.sqlx/`, the offline query data that lets `cargo build` check every query at
# compile time without a database. Run it after adding or changing a `sqlx::query!` or a
# migration, and commit `.sqlx/`.
#
# Uses DATABASE_URL when set (it must point at a scratch database: migrations are applied to
# it); otherwise a database named `meterapi_prepare` on the local PostgreSQL at 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${DATABASE_URL:-}" ]; then
  admin_url="postgres://postgres@127.0.0.1:5432/postgres"
  psql "$admin_url" -qtc "DROP DATABASE IF EXISTS meterapi_prepare WITH (FORCE)" >/dev/null
  psql "$admin_url" -qtc "CREATE DATABASE meterapi_prepare" >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/meterapi_prepare"
fi

for migration in migrations/*.sql; do
  psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 -f "$migration" >/dev/null
done

rm -rf .sqlx && mkdir -p .sqlx
# The macros write one file per query into SQLX_OFFLINE_DIR while checking against the database;
# touching the crate root makes cargo expand them again.
touch src/lib.rs
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$PWD/.sqlx" cargo check --all-targets --quiet
echo "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
