<?php
// Scenarios an application runs with PHP's PDO (Debian's php-pgsql, on libpq) and its defaults:
// native prepares (each PDOStatement a named server statement, PQprepare then PQexecPrepared,
// dropped with a simple-Query DEALLOCATE when the statement object goes), beginTransaction()
// as a simple BEGIN. Run by test/integration/driver-php-ruby.test.ts: `php scenarios.php NAME`
// with PGRELAY_TEST_HOST, _PORT, _DATABASE, _USER, _PASSWORD set; prints one JSON line, the
// values the application saw and the SQLSTATEs of the errors it got.
$db = new PDO(
  sprintf('pgsql:host=%s;port=%s;dbname=%s;sslmode=disable', getenv('PGRELAY_TEST_HOST'), getenv('PGRELAY_TEST_PORT'), getenv('PGRELAY_TEST_DATABASE')),
  getenv('PGRELAY_TEST_USER'),
  getenv('PGRELAY_TEST_PASSWORD'),
  [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION],
);
$values = [];
$errors = [];
$read = function (int $id) use ($db, &$values): void {
  $statement = $db->prepare('SELECT v FROM php_items WHERE id = ?');
  $statement->execute([$id]);
  $values[] = (string) $statement->fetchColumn();
};
switch ($argv[1]) {
  case 'read-transactions':
    // five transactions that only read, a statement per read (prepared, then deallocated)
    for ($i = 0; $i < 5; $i++) {
      $db->beginTransaction();
      foreach ([1, 2, 3] as $id) $read($id);
      $db->commit();
    }
    // one statement object executed in three transactions; then emulated prepares
    $statement = $db->prepare('SELECT v FROM php_items WHERE id = :id');
    for ($i = 0; $i < 3; $i++) {
      $db->beginTransaction();
      $statement->execute(['id' => 4]);
      $values[] = (string) $statement->fetchColumn();
      $db->commit();
    }
    $db->setAttribute(PDO::ATTR_EMULATE_PREPARES, true);
    $db->beginTransaction();
    $read(4);
    $db->commit();
    break;
  case 'read-then-write':
    $db->beginTransaction();
    $read(5);
    $db->prepare('UPDATE php_items SET v = v + 1 WHERE id = ?')->execute([5]);
    $read(5);
    $db->commit();
    break;
  case 'error-in-transaction':
    $db->beginTransaction();
    $read(7);
    foreach (['SELECT 1/0', 'SELECT 1'] as $sql) {
      try {
        $db->query($sql);
      } catch (PDOException $e) {
        $errors[] = $e->getCode();
      }
    }
    $db->rollBack();
    $read(7);
    break;
  default:
    fwrite(STDERR, "no scenario {$argv[1]}\n");
    exit(2);
}
echo json_encode(['values' => $values, 'errors' => $errors]), "\n";
