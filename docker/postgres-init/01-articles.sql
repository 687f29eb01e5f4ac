-- The source table Debezium captures, and the publication it reads through.
--
-- Runs once, when the source database's data directory is first created
-- (docker-entrypoint-initdb.d), in the database named by POSTGRES_DB. Written
-- to be re-runnable by hand as well.

CREATE TABLE IF NOT EXISTS public.articles (
    article_id   text PRIMARY KEY,
    title        text,
    url          text,
    source       text,
    author       text,
    body         text,
    published_at timestamptz,
    updated_at   timestamptz,
    word_count   integer
);

-- The connector runs with publication.autocreate.mode=disabled: its role owns
-- no table, so it could not create a publication itself, and a publication
-- made here lists exactly the captured table, never more.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'dbz_neuronews_articles') THEN
        CREATE PUBLICATION dbz_neuronews_articles FOR TABLE public.articles;
    END IF;
END
$$;
