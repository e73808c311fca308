module github.com/metastore-dev/metastore

go 1.26.8
