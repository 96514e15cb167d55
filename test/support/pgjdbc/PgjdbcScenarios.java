import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

/**
 * What an application does through pgjdbc, with the driver's own defaults unless the URL options
 * say otherwise (autocommit off as frameworks set it, server-side statements after
 * prepareThreshold uses). Usage: PgjdbcScenarios HOST PORT DATABASE USER URL_OPTIONS SCENARIO, the
 * password in the environment variable PGRELAY_TEST_PASSWORD; prints one JSON line of what the
 * application saw (values read, SQLSTATEs of the errors it caught).
 */
public class PgjdbcScenarios {
  public static void main(String[] args) throws Exception {
    String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/" + args[2] + args[4];
    Properties props = new Properties();
    props.setProperty("user", args[3]);
    props.setProperty("password", System.getenv("PGRELAY_TEST_PASSWORD"));
    List<String> values = new ArrayList<>();
    List<String> errors = new ArrayList<>();
    try (Connection c = DriverManager.getConnection(url, props)) {
      switch (args[5]) {
        case "read-transactions": {
          // five transactions of three reads each, a PreparedStatement as an ORM sends them
          c.setAutoCommit(false);
          for (int t = 0; t < 5; t++) {
            try (PreparedStatement ps = c.prepareStatement("SELECT v FROM jdbc_items WHERE id = ?")) {
              for (int id = 1; id <= 3; id++) {
                ps.setInt(1, id);
                try (ResultSet r = ps.executeQuery()) {
                  r.next();
                  values.add(Integer.toString(r.getInt(1)));
                }
              }
            }
            c.commit();
          }
          break;
        }
        case "error-then-write": {
          // a statement fails and the application goes on (with autosave, pgjdbc rolls back to its savepoint), then writes
          c.setAutoCommit(false);
          try (Statement s = c.createStatement()) {
            values.add(read(s, "SELECT v FROM jdbc_items WHERE id = 4"));
            try {
              s.executeQuery("SELECT v / (v - v) FROM jdbc_items WHERE id = 4");
            } catch (SQLException e) {
              errors.add(e.getSQLState());
            }
            try {
              values.add(read(s, "SELECT v FROM jdbc_items WHERE id = 4"));
              values.add(Integer.toString(s.executeUpdate("UPDATE jdbc_items SET v = v + 1 WHERE id = 4")));
              c.commit();
            } catch (SQLException e) {
              errors.add(e.getSQLState());
              c.rollback();
            }
          }
          break;
        }
        case "fetch-then-write": {
          // a result read with a fetch size (a portal read five rows at a time), then a write
          c.setAutoCommit(false);
          try (Statement s = c.createStatement()) {
            s.setFetchSize(5);
            long sum = 0;
            int rows = 0;
            try (ResultSet r = s.executeQuery("SELECT v FROM jdbc_items ORDER BY id")) {
              while (r.next()) {
                sum += r.getInt(1);
                rows++;
              }
            }
            values.add(rows + " rows, sum " + sum);
            values.add(Integer.toString(s.executeUpdate("UPDATE jdbc_items SET v = v + 1 WHERE id = 6")));
          }
          c.commit();
          break;
        }
        case "write-first": {
          c.setAutoCommit(false);
          try (PreparedStatement ps = c.prepareStatement("UPDATE jdbc_items SET v = v + 1 WHERE id = ?")) {
            ps.setInt(1, 5);
            values.add(Integer.toString(ps.executeUpdate()));
          }
          try (Statement s = c.createStatement()) {
            values.add(read(s, "SELECT v FROM jdbc_items WHERE id = 5"));
          }
          c.commit();
          break;
        }
        default:
          throw new IllegalArgumentException("no scenario " + args[5]);
      }
    }
    System.out.println("{\"values\":" + json(values) + ",\"errors\":" + json(errors) + "}");
  }

  private static String read(Statement s, String sql) throws SQLException {
    try (ResultSet r = s.executeQuery(sql)) {
      r.next();
      return Integer.toString(r.getInt(1));
    }
  }

  private static String json(List<String> list) {
    StringBuilder out = new StringBuilder("[");
    for (int i = 0; i < list.size(); i++) out.append(i == 0 ? "" : ",").append('"').append(list.get(i)).append('"');
    return out.append(']').toString();
  }
}
