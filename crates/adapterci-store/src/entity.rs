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
        /// The manifest's digest with its time blanked (NULL for versions recorded before channels existed).
        pub content_digest: Option<String>,
        /// The base the version is bound to (NULL before channels existed: then its base model).
        pub base_binding: Option<String>,
        pub deprecated: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod adapter_channels {
    //! The `adapter_channels` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "adapter_channels")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub adapter: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub channel: String,
        pub version: i64,
        pub base_binding: String,
        pub pinned: bool,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod adapter_channel_events {
    //! The `adapter_channel_events` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "adapter_channel_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub adapter: String,
        pub channel: String,
        pub action: String,
        pub from_version: Option<i64>,
        pub to_version: i64,
        pub at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod adapter_tags {
    //! The `adapter_tags` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "adapter_tags")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub adapter: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub tag: String,
        pub version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod registry_publishes {
    //! The `registry_publishes` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "registry_publishes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        #[sea_orm(column_type = "Text")]
        pub digests: String,
        pub started_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod registry_sweeps {
    //! The `registry_sweeps` table.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "registry_sweeps")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub started_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
