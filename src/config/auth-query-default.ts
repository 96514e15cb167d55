/** PgBouncer's default auth_query: needs a superuser; a SECURITY DEFINER function is the least-privilege way. */
export const DEFAULT_AUTH_QUERY = 'SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = $1';
