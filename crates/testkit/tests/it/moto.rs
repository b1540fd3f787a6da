//! The launcher's TransactWriteItems patch: a cancelled transaction must still roll back every item it
//! named, as moto's own (table-copying) rollback does, for both key shapes.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, KeySchemaElement,
    KeyType, Put, ScalarAttributeType, TransactWriteItem, Update,
};
use tokenwatch_testkit::{Moto, sdk_config_for};

async fn client(moto: &Moto) -> Client {
    Client::new(&sdk_config_for(&moto.endpoint(), &moto.endpoint()).await)
}

async fn create_table(client: &Client, name: &str, range: bool) {
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest);
    let keys: &[(&str, KeyType)] = if range {
        &[("pk", KeyType::Hash), ("sk", KeyType::Range)]
    } else {
        &[("pk", KeyType::Hash)]
    };
    for (attribute, kind) in keys {
        request = request
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(*attribute)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(*attribute)
                    .key_type(kind.clone())
                    .build()
                    .unwrap(),
            );
    }
    request.send().await.unwrap();
}

fn key(pk: &str, range: bool) -> Vec<(String, AttributeValue)> {
    let mut key = vec![("pk".to_owned(), AttributeValue::S(pk.to_owned()))];
    if range {
        key.push(("sk".to_owned(), AttributeValue::S("s".to_owned())));
    }
    key
}

async fn value(client: &Client, table: &str, pk: &str, range: bool) -> Option<String> {
    let item = client
        .get_item()
        .table_name(table)
        .set_key(Some(key(pk, range).into_iter().collect()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item;
    item.map(|item| {
        item.get("v")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    })
}

async fn put(client: &Client, table: &str, pk: &str, v: &str, range: bool) {
    let mut request = client
        .put_item()
        .table_name(table)
        .item("v", AttributeValue::S(v.to_owned()));
    for (name, value) in key(pk, range) {
        request = request.item(name, value);
    }
    request.send().await.unwrap();
}

/// An in-place update of `v`, the kind of write a whole-item backup would not cover.
fn set_v(table: &str, pk: &str, v: &str, range: bool) -> TransactWriteItem {
    TransactWriteItem::builder()
        .update(
            Update::builder()
                .table_name(table)
                .set_key(Some(key(pk, range).into_iter().collect()))
                .update_expression("SET v = :v")
                .expression_attribute_values(":v", AttributeValue::S(v.to_owned()))
                .build()
                .unwrap(),
        )
        .build()
}

/// Puts a new item, updates one in place, deletes a third, then fails a condition: nothing may stick.
async fn cancelled_transaction_rolls_back(client: &Client, table: &str, range: bool) {
    create_table(client, table, range).await;
    put(client, table, "updated", "before", range).await;
    put(client, table, "deleted", "before", range).await;
    put(client, table, "guard", "present", range).await;

    let mut new_item = Put::builder()
        .table_name(table)
        .item("v", AttributeValue::S("new".into()));
    for (name, value) in key("created", range) {
        new_item = new_item.item(name, value);
    }
    let items = vec![
        TransactWriteItem::builder()
            .put(new_item.build().unwrap())
            .build(),
        set_v(table, "updated", "after", range),
        TransactWriteItem::builder()
            .delete(
                Delete::builder()
                    .table_name(table)
                    .set_key(Some(key("deleted", range).into_iter().collect()))
                    .build()
                    .unwrap(),
            )
            .build(),
        TransactWriteItem::builder()
            .condition_check(
                ConditionCheck::builder()
                    .table_name(table)
                    .set_key(Some(key("guard", range).into_iter().collect()))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .unwrap(),
            )
            .build(),
    ];
    let err = client
        .transact_write_items()
        .set_transact_items(Some(items))
        .send()
        .await
        .expect_err("the condition check fails");
    assert!(
        err.into_service_error().is_transaction_canceled_exception(),
        "{table}: cancelled, not another error"
    );
    assert_eq!(
        value(client, table, "created", range).await,
        None,
        "{table}"
    );
    assert_eq!(
        value(client, table, "updated", range).await.as_deref(),
        Some("before"),
        "{table}"
    );
    assert_eq!(
        value(client, table, "deleted", range).await.as_deref(),
        Some("before"),
        "{table}"
    );
    assert_eq!(
        value(client, table, "guard", range).await.as_deref(),
        Some("present"),
        "{table}"
    );
}

#[tokio::test]
async fn a_cancelled_transaction_leaves_every_item_as_it_was() {
    let moto = Moto::start().await.unwrap();
    let client = client(&moto).await;
    cancelled_transaction_rolls_back(&client, "hash-only", false).await;
    cancelled_transaction_rolls_back(&client, "hash-and-range", true).await;
}

#[tokio::test]
async fn a_transaction_that_succeeds_keeps_its_writes() {
    let moto = Moto::start().await.unwrap();
    let client = client(&moto).await;
    create_table(&client, "t", false).await;
    put(&client, "t", "old", "before", false).await;
    let mut fresh = Put::builder()
        .table_name("t")
        .item("v", AttributeValue::S("new".into()));
    for (name, value) in key("fresh", false) {
        fresh = fresh.item(name, value);
    }
    client
        .transact_write_items()
        .transact_items(
            TransactWriteItem::builder()
                .put(fresh.build().unwrap())
                .build(),
        )
        .transact_items(set_v("t", "old", "after", false))
        .send()
        .await
        .unwrap();
    assert_eq!(
        value(&client, "t", "fresh", false).await.as_deref(),
        Some("new")
    );
    assert_eq!(
        value(&client, "t", "old", false).await.as_deref(),
        Some("after")
    );
}
