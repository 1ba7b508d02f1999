-- Runs once, on the first start of an empty volume: the trader's own database next to Prefect's.
CREATE DATABASE trader OWNER trader;
