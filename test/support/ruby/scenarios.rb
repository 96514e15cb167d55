# Scenarios an application runs with Ruby's pg (Debian's ruby-pg, on libpq) as Rails' adapter uses
# it: BEGIN and COMMIT as simple Queries, named statements prepared (PQprepare) and run
# (PQexecPrepared), exec_params for unnamed ones, DEALLOCATE as a simple Query. Run by
# test/integration/driver-php-ruby.test.ts: `ruby scenarios.rb NAME` with PGRELAY_TEST_URL set;
# prints one JSON line, the values the application saw and the SQLSTATEs of the errors it got.
require 'json'
require 'pg'

conn = PG.connect(ENV.fetch('PGRELAY_TEST_URL'))
values = []
errors = []
read = ->(id) { values << conn.exec_params('SELECT v FROM php_items WHERE id = $1', [id]).getvalue(0, 0) }
case ARGV[0]
when 'read-transactions'
  # five transactions that only read through a statement prepared in each; then a transaction block
  5.times do |i|
    conn.exec('BEGIN')
    conn.prepare("a#{i}", 'SELECT v FROM php_items WHERE id = $1')
    [1, 2, 3].each { |id| values << conn.exec_prepared("a#{i}", [id]).getvalue(0, 0) }
    conn.exec('COMMIT')
  end
  conn.transaction { read.call(4) }
  # statements dropped as Rails drops them; the name is gone for this client
  5.times { |i| conn.exec("DEALLOCATE a#{i}") }
  begin
    conn.exec_prepared('a1', [1])
  rescue PG::Error => e
    errors << e.result.error_field(PG::PG_DIAG_SQLSTATE)
  end
when 'read-then-write'
  conn.transaction do
    read.call(5)
    conn.exec_params('UPDATE php_items SET v = v + 1 WHERE id = $1', [5])
    read.call(5)
  end
when 'error-in-transaction'
  conn.exec('BEGIN')
  read.call(7)
  ['SELECT 1/0', 'SELECT 1'].each do |sql|
    conn.exec(sql)
  rescue PG::Error => e
    errors << e.result.error_field(PG::PG_DIAG_SQLSTATE)
  end
  conn.exec('ROLLBACK')
  read.call(7)
else
  warn "no scenario #{ARGV[0]}"
  exit 2
end
puts JSON.generate({ values: values, errors: errors })
