//! sea-orm entities mirroring the tables that `adapterci-migrations` creates. Columns are the raw stored types
//! (text, integers, timestamps); `convert` turns rows into domain records and rejects data it cannot read.

pub mod pipelines {
    //! The `pipelines` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "pipelines")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub revision: i64,
        #[sea_orm(column_type = "Text")]
        pub spec_yaml: String,
        pub spec_digest: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod runs {
    //! The `runs` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "runs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub pipeline: String,
        pub pipeline_revision: i64,
        pub state: String,
        pub stage: Option<String>,
        #[sea_orm(column_type = "Text")]
        pub trigger_json: String,
        pub dataset_digest: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub report_json: Option<String>,
        pub published_adapter: Option<String>,
        pub published_version: Option<i64>,
        pub published_manifest_digest: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub error: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod watches {
    //! The `watches` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "watches")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub pipeline: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub location: String,
        pub etag: Option<String>,
        pub digest: String,
        pub seen_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod adapter_versions {
    //! The `adapter_versions` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "adapter_versions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i64,
        pub manifest_digest: String,
        pub base_model_digest: String,
        pub run_id: Option<String>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
