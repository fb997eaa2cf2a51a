//! The calls this service makes to Stripe, through async-stripe: Checkout Sessions for orders,
//! the user's Customer, Billing Portal sessions and subscription cancellation. `STRIPE_API_BASE` points the client elsewhere (a local fake in
//! tests). Every call carries an idempotency key derived from the order, so a retried request
//! cannot create a second session.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use stripe::{Client, ClientBuilder, RequestStrategy, StripeRequest};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionAllowedPaymentMethodTypes as MethodType,
    CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionLineItemsPriceDataRecurring,
    CreateCheckoutSessionLineItemsPriceDataRecurringInterval as Interval,
    CreateCheckoutSessionPaymentIntentData, CreateCheckoutSessionPaymentMethodOptions,
    CreateCheckoutSessionPaymentMethodOptionsWechatPay,
    CreateCheckoutSessionPaymentMethodOptionsWechatPayClient,
    CreateCheckoutSessionSubscriptionData, ExpireCheckoutSession, ProductData,
};
use stripe_shared::CheckoutSessionMode;
use stripe_types::Currency;
use url::Url;

use super::error::PaymentError;
use super::order::{Order, PaymentMethod};
use crate::config::Settings;
use crate::plans::Plan;

/// How long a Stripe call may take before it counts as failed.
const STRIPE_TIMEOUT: Duration = Duration::from_secs(15);

pub struct StripeApi {
    /// None when `STRIPE_SECRET_KEY` is unset.
    client: Option<Client>,
    public_url: Url,
}

/// A created Checkout Session.
pub struct Session {
    pub id: String,
    pub url: String,
}

impl StripeApi {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<StripeApi> {
        let client = match &settings.stripe_secret_key {
            Some(key) => Some(
                ClientBuilder::new(key.expose_secret())
                    .url(settings.stripe_api_base.as_str())
                    .timeout(STRIPE_TIMEOUT)
                    .build()
                    .map_err(|error| anyhow::anyhow!("cannot build the Stripe client: {error}"))?,
            ),
            None => None,
        };
        Ok(StripeApi {
            client,
            public_url: settings.public_url.clone(),
        })
    }

    pub fn is_configured(&self) -> bool {
        self.client.is_some()
    }

    fn client(&self) -> Result<&Client, PaymentError> {
        self.client
            .as_ref()
            .ok_or(PaymentError::PaymentsNotConfigured)
    }

    /// A Checkout Session for `order`, expiring with it. `attempt` numbers the sessions of one
    /// order, so each `/checkout` makes a new one while a retried call repeats the same.
    pub async fn create_session(
        &self,
        order: &Order,
        plan: &Plan,
        customer: &str,
        attempt: i32,
    ) -> Result<Session, PaymentError> {
        let client = self.client()?;
        let currency = Currency::from_str(&order.currency).map_err(|_| {
            PaymentError::CheckoutFailed(format!("unknown currency {}", order.currency))
        })?;
        let mut line_item = CreateCheckoutSessionLineItems::new();
        line_item.quantity = Some(1);
        match &plan.stripe_price_id {
            Some(price) => line_item.price = Some(price.clone()),
            None => {
                let mut price_data = CreateCheckoutSessionLineItemsPriceData::new(currency);
                price_data.unit_amount = Some(order.amount_cents);
                price_data.product_data = Some(ProductData::new(plan.name.clone()));
                if order.is_subscription() {
                    let interval = if plan.interval.as_deref() == Some("year") {
                        Interval::Year
                    } else {
                        Interval::Month
                    };
                    price_data.recurring = Some(
                        CreateCheckoutSessionLineItemsPriceDataRecurring::new(interval),
                    );
                }
                line_item.price_data = Some(price_data);
            }
        }
        let metadata = HashMap::from([
            (String::from("order_no"), order.order_no.clone()),
            (String::from("user_id"), order.user_id.to_string()),
        ]);
        let page = |outcome: &str| {
            let mut url = self
                .public_url
                .join(&format!("billing/{outcome}"))
                .expect("a relative path");
            url.query_pairs_mut()
                .append_pair("order_no", &order.order_no);
            url.to_string()
        };
        let mut request = CreateCheckoutSession::new()
            .line_items(vec![line_item])
            .client_reference_id(order.order_no.clone())
            .customer(customer)
            .metadata(metadata.clone())
            .success_url(page("success"))
            .cancel_url(page("cancel"))
            .expires_at(order.expires_at.timestamp());
        if plan.allow_promotion_codes {
            request = request.allow_promotion_codes(true);
        }
        if order.is_subscription() {
            let mut subscription = CreateCheckoutSessionSubscriptionData::new();
            subscription.metadata = Some(metadata);
            request = request
                .mode(CheckoutSessionMode::Subscription)
                .allowed_payment_method_types(vec![MethodType::Card])
                .subscription_data(subscription);
        } else {
            let mut payment_intent = CreateCheckoutSessionPaymentIntentData::new();
            payment_intent.metadata = Some(metadata);
            let method = match order.payment_method {
                PaymentMethod::Alipay => MethodType::Alipay,
                PaymentMethod::WechatPay => MethodType::WechatPay,
                PaymentMethod::CreditCard | PaymentMethod::Manual => MethodType::Card,
            };
            if method == MethodType::WechatPay {
                let mut options = CreateCheckoutSessionPaymentMethodOptions::new();
                options.wechat_pay = Some(CreateCheckoutSessionPaymentMethodOptionsWechatPay::new(
                    CreateCheckoutSessionPaymentMethodOptionsWechatPayClient::Web,
                ));
                request = request.payment_method_options(options);
            }
            request = request
                .mode(CheckoutSessionMode::Payment)
                .allowed_payment_method_types(vec![method])
                .payment_intent_data(payment_intent);
        }
        let key = format!("checkout-{}-{attempt}", order.order_no);
        let session = request
            .customize()
            .request_strategy(RequestStrategy::Idempotent(idempotency_key(&key)?))
            .send(client)
            .await
            .map_err(|error| PaymentError::CheckoutFailed(error.to_string()))?;
        let url = session.url.ok_or_else(|| {
            PaymentError::CheckoutFailed(String::from("Stripe returned a session without a url"))
        })?;
        Ok(Session {
            id: session.id.to_string(),
            url,
        })
    }

    /// Expires an open Checkout Session, so an order replaced by a new session cannot be paid
    /// twice.
    pub async fn expire_session(
        &self,
        session_id: &str,
        order_no: &str,
    ) -> Result<(), PaymentError> {
        let client = self.client()?;
        let key = format!("expire-{order_no}-{session_id}");
        ExpireCheckoutSession::new(session_id)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(idempotency_key(&key)?))
            .send(client)
            .await
            .map(drop)
            .map_err(|error| PaymentError::CheckoutFailed(error.to_string()))
    }

    /// Creates the user's Customer; the idempotency key makes a retried or racing call return the
    /// same one.
    pub async fn create_customer(
        &self,
        user_id: uuid::Uuid,
        email: &str,
        idempotency: &str,
    ) -> Result<String, PaymentError> {
        let metadata = HashMap::from([(String::from("user_id"), user_id.to_string())]);
        let customer = stripe_core::customer::CreateCustomer::new()
            .email(email)
            .metadata(metadata)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(idempotency_key(idempotency)?))
            .send(self.client()?)
            .await
            .map_err(|error| PaymentError::CheckoutFailed(error.to_string()))?;
        Ok(customer.id.to_string())
    }

    /// Sends a changed address to the user's Customer (receipts and invoices go there).
    pub async fn update_customer_email(
        &self,
        customer_id: &str,
        email: &str,
    ) -> Result<(), PaymentError> {
        stripe_core::customer::UpdateCustomer::new(customer_id)
            .email(email)
            .send(self.client()?)
            .await
            .map(drop)
            .map_err(|error| PaymentError::CheckoutFailed(error.to_string()))
    }

    /// A Billing Portal session of the customer, returning to `{PUBLIC_URL}/billing`.
    pub async fn portal_session(&self, customer_id: &str) -> Result<String, PaymentError> {
        let return_url = self.public_url.join("billing").expect("a relative path");
        let session = stripe_billing::billing_portal_session::CreateBillingPortalSession::new()
            .customer(customer_id)
            .return_url(return_url.to_string())
            .send(self.client()?)
            .await
            .map_err(|error| PaymentError::CheckoutFailed(error.to_string()))?;
        Ok(session.url)
    }

    /// Moves a subscription's item to `plan`'s price: an upgrade invoices the prorated
    /// difference at once, a downgrade bills the new price from the next renewal. The metadata
    /// names the plan, so the webhooks can tell which change Stripe confirms.
    pub async fn change_plan(
        &self,
        subscription_id: &str,
        order: &Order,
        plan: &Plan,
        upgrade: bool,
    ) -> Result<(), PaymentError> {
        use stripe_billing::subscription::{
            RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems,
            UpdateSubscriptionItemsPriceData, UpdateSubscriptionItemsPriceDataRecurring,
            UpdateSubscriptionItemsPriceDataRecurringInterval as ItemInterval,
            UpdateSubscriptionProrationBehavior as Proration,
        };
        let failed = |error: stripe::StripeError| PaymentError::CheckoutFailed(error.to_string());
        let client = self.client()?;
        let subscription = RetrieveSubscription::new(subscription_id)
            .send(client)
            .await
            .map_err(failed)?;
        let item = subscription.items.data.first().ok_or_else(|| {
            PaymentError::CheckoutFailed(String::from("the subscription has no item"))
        })?;
        let mut change = UpdateSubscriptionItems::new();
        change.id = Some(item.id.to_string());
        match &plan.stripe_price_id {
            Some(price) => change.price = Some(price.clone()),
            None => {
                let currency = Currency::from_str(&plan.currency).map_err(|_| {
                    PaymentError::CheckoutFailed(format!("unknown currency {}", plan.currency))
                })?;
                let interval = if plan.interval.as_deref() == Some("year") {
                    ItemInterval::Year
                } else {
                    ItemInterval::Month
                };
                let recurring = UpdateSubscriptionItemsPriceDataRecurring {
                    interval,
                    interval_count: None,
                };
                let mut price = UpdateSubscriptionItemsPriceData::new(
                    currency,
                    item.price.product.id().as_str(),
                    recurring,
                );
                price.unit_amount = Some(plan.amount_cents);
                change.price_data = Some(price);
            }
        }
        let metadata = HashMap::from([
            (String::from("order_no"), order.order_no.clone()),
            (String::from("user_id"), order.user_id.to_string()),
            (String::from("plan_id"), plan.id.to_string()),
        ]);
        let proration = if upgrade {
            Proration::AlwaysInvoice
        } else {
            Proration::None
        };
        UpdateSubscription::new(subscription_id)
            .items(vec![change])
            .proration_behavior(proration)
            .metadata(metadata)
            .send(client)
            .await
            .map(drop)
            .map_err(failed)
    }

    /// Cancels a subscription at the end of its period, or at once.
    pub async fn cancel_subscription(
        &self,
        subscription_id: &str,
        at_period_end: bool,
    ) -> Result<(), PaymentError> {
        let client = self
            .client
            .as_ref()
            .ok_or(PaymentError::CancelUnsupported)?;
        let outcome = if at_period_end {
            stripe_billing::subscription::UpdateSubscription::new(subscription_id)
                .cancel_at_period_end(true)
                .send(client)
                .await
                .map(drop)
        } else {
            stripe_billing::subscription::CancelSubscription::new(subscription_id)
                .send(client)
                .await
                .map(drop)
        };
        outcome.map_err(|error| PaymentError::CancelFailed(error.to_string()))
    }
}

fn idempotency_key(key: &str) -> Result<stripe::IdempotencyKey, PaymentError> {
    stripe::IdempotencyKey::new(key)
        .map_err(|error| PaymentError::Internal(anyhow::anyhow!("bad idempotency key: {error}")))
}
